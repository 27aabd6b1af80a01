"""What makes two runs the same run: a run folder belongs to one configuration (:func:`run_identity`), and a
relaunch or a checkpoint of another one is refused with what differs (:func:`differences`)."""
from __future__ import annotations

import hashlib
import json

from omegaconf import OmegaConf

# Keys that may change between launches of one run folder without making it another run: where things are and
# how they are computed, not what is trained; and trainer.epochs, so that a finished run can be extended. Every
# other key is the folder's fingerprint: a relaunch or a last.pt with another one is refused
# (trainer.force_resume=true resumes anyway).
RELAUNCH_KEYS = ("trainer.epochs", "trainer.device", "trainer.threads", "trainer.progress", "trainer.resume",
                 "trainer.force_resume", "trainer.skip_completed", "trainer.checkpoint",
                 "trainer.checkpoint_every", "trainer.save_best", "trainer.compile", "trainer.channels_last",
                 "logger", "dataset.root", "dataset.path", "dataset.verify", "dataset.download", "dataset.cache_dir",
                 "dataset.num_workers", "method.teacher_cache", "model.download", "imports", "report", "hydra")


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
