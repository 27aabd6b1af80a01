"""What makes two runs the same run: a run folder belongs to one configuration (:func:`run_identity`), and a
relaunch or a checkpoint of another one is refused with what differs (:func:`differences`)."""
from __future__ import annotations

import hashlib
import json

from omegaconf import OmegaConf

# Keys that may change between launches of one run folder without making it another run, each with the reason it
# cannot change what the run computes. Every other key is the folder's fingerprint: a relaunch or a last.pt with
# another one is refused (trainer.force_resume=true resumes anyway). What these keys point at is identified by its
# content instead (the folder's .hydra/inputs.json: lstsd.training.run.inputs_identity), so a moved copy of the
# same data or teacher is accepted and other data under the same path is not.
RELAUNCH_KEYS = {
    "trainer.epochs": "the length: a relaunch extends a run, and a resume checks that the learning rates so far "
                      "are this length's (a shorter run than the checkpoint is refused)",
    "trainer.device": "where it runs (a resumed run continues there)",
    "trainer.threads": "how many CPU threads compute a step",
    "trainer.progress": "the console only",
    "trainer.resume": "what a relaunch does with the folder",
    "trainer.force_resume": "what a relaunch does with the folder",
    "trainer.skip_completed": "what a relaunch does with the folder",
    "trainer.checkpoint": "which files are written",
    "trainer.checkpoint_every": "which files are written (a resume from any of them is exact)",
    "trainer.save_best": "which files are written",
    "trainer.compile": "how the same operations are run",
    "trainer.channels_last": "how the same operations are laid out in memory",
    "logger": "where the metrics are reported",
    "dataset.root": "where the data is: its content is identified in .hydra/inputs.json",
    "dataset.path": "where the data is: its content is identified in .hydra/inputs.json",
    "dataset.verify": "how much of the data is checked before training",
    "dataset.download": "whether missing files are fetched (their content is identified)",
    "dataset.cache_dir": "where tokenised splits are cached (keyed by their content)",
    "dataset.num_workers": "how many processes read the data (each sample's transform is seeded by its index)",
    "method.teacher_cache": "where a teacher trained on the fly is kept (the teacher's keys are in the identity)",
    "method.teacher_run": "where the teacher run is: its fingerprint, length and score are in .hydra/inputs.json",
    "method.teacher_checkpoint": "where the teacher file is: its content is identified in .hydra/inputs.json",
    "model.download": "whether missing weights are fetched",
    "imports": "where components are found: the names they register are in the identity",
    "report": "the table printed after a sweep",
    "hydra": "Hydra's own settings: folders, launcher, logging",
}


def run_identity(cfg) -> dict:
    """The composed config (a DictConfig, or a saved one) as plain values, without :data:`RELAUNCH_KEYS`."""
    out = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else json.loads(json.dumps(cfg))
    for key in RELAUNCH_KEYS:
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def fingerprint(ident: dict) -> str:
    """A short hash of a :func:`run_identity`."""
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differences(old: dict, new: dict, key: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two identities (``-`` for an absent one); of a
    group whose option differs (its name, arch or _target_), that key only."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in ("arch", "name", "_target_"):
            if k in old and k in new and old[k] != new[k]:
                return [f"{key}.{k}: {old[k]} -> {new[k]}"]
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in differences(old.get(k, "-"), new.get(k, "-"), f"{key}.{k}" if key else str(k))]
    if (old, new) in (("-", None), (None, "-")):
        return []  # a key added since with a null default: runs made before it keep their identity
    return [] if old == new else [f"{key}: {old} -> {new}"]


def job_folders(jobs: list[list[str]], exclude_keys, item_sep: str = ",", kv_sep: str = "=") -> list[str]:
    """The folder name of each of a sweep's jobs: Hydra's ``override_dirname`` (the overrides but the excluded keys,
    sorted), and where an excluded key takes more than one value across the jobs (a sweep over ``dataset.root`` or
    ``method.teacher_run``, whose paths make poor names) the key and a short hash of the job's values, e.g.
    ``method=kd,seed=0,method.teacher_run@3f2a9c1e``: two jobs that compute different things never share a folder.
    A sweep whose excluded keys take one value keeps Hydra's names."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = [parser.parse_overrides(list(job)) for job in jobs]
    excluded = set(exclude_keys)
    seen: dict[str, set] = {}
    for job in parsed:
        for key in excluded:
            seen.setdefault(key, set()).add(next((o.input_line for o in job if o.key_or_group == key), None))
    varying = sorted(k for k, values in seen.items() if len(values) > 1)
    names = []
    for job in parsed:
        name = get_overrides_dirname(job, list(exclude_keys), item_sep, kv_sep)
        lines = sorted(o.input_line for o in job if o.key_or_group in varying)
        if lines:
            keys = "+".join(k for k in varying if any(o.key_or_group == k for o in job))
            digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:8]
            name = f"{name}{item_sep if name else ''}{keys}@{digest}"
        names.append(name)
    return names
