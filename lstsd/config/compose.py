"""Composing configurations: the config directory, the resolvers and the ConfigStore, set up in one place.

Nothing happens at import. :func:`setup` registers the resolvers and stores every schema in Hydra's
ConfigStore: the run-wide ones of :mod:`lstsd.config` and each registered dataset's, model's and method's
(:mod:`lstsd.registry`, which imports the components' modules), as ``base_<name>`` with the name filled in, so
a YAML option extends ``base_<name>`` and never repeats it. Launchers that run jobs in other processes
(joblib, submitit, SLURM) hand the ConfigStore and the resolvers over with Hydra's singleton state.

``setup(fast=True)`` is for commands that only compose and print (``--help``, ``--cfg``, ``--info``, tab
completion): it stores the same schemas from a snapshot the last full setup wrote (plain nodes, unknown keys
still refused), without importing the components and so without torch. The snapshot is keyed by the contents of
the package's source files (and its version), so a fresh clone finds the one any earlier checkout of the same code
wrote; writing one removes the others. Without a current one the full setup runs.

A user's own components live in modules of their own, named by the ``imports`` key (``imports=[mypkg.plugins]``):
:func:`prepare` imports them before anything is composed (their decorators register them; their schemas are
stored with the others), and every job imports them again before its configuration is validated
(:func:`import_modules`, called by :func:`lstsd.training.run.run`), whatever process the launcher runs it in.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import socket
import time
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from lstsd import config
from lstsd.errors import ConfigError, one_line
from lstsd.registry import DATASETS, METHODS, MODELS

PACKAGE = Path(__file__).resolve().parents[1]  # the lstsd package (its conf/ and source files)
CONFIG_DIR = str(PACKAGE / "conf")
RUN_WIDE = {("", "base_config"): config.Config, ("optim", "base_sgd"): config.SGDConfig,
            ("optim", "base_adam"): config.AdamConfig, ("schedule", "base_schedule"): config.ScheduleConfig,
            ("trainer", "base_trainer"): config.TrainerConfig, ("logger", "base_logger"): config.LoggerConfig}
_state: Optional[str] = None  # None, "fast" or "full"
IMPORTED: list[str] = []  # the modules of imports= this process has imported, in order


def sweep_uid() -> str:
    """A short id of this launch (host, process, time), the same for every job of a sweep, including jobs run in
    other processes (submitit, SLURM), which inherit it through the environment: two sweeps started in the same
    second get different directories."""
    if "LSTSD_SWEEP_UID" not in os.environ:
        seed = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        os.environ["LSTSD_SWEEP_UID"] = hashlib.sha1(seed.encode()).hexdigest()[:6]
    return os.environ["LSTSD_SWEEP_UID"]


def proportion(value: float, of: float, total: float) -> int:
    """``value`` out of ``of`` epochs, scaled to a run of ``total`` epochs (a ramp-up a paper gives for its own
    schedule length): ``${lstsd_proportion:80,300,${trainer.epochs}}``."""
    return int(round(float(value) * float(total) / float(of)))


def parallel_jobs(threads, device: str = "auto") -> int:
    """How many jobs one machine runs at once without oversubscribing it (``${lstsd_parallel:${trainer.threads},
    ${trainer.device}}``, the joblib launcher's ``n_jobs`` in ``experiment=demo``): one per GPU where it has GPUs
    and the jobs may use them (``device`` auto or cuda), else its cores divided by each job's threads
    (``trainer.threads``; null counts as all cores, so one job). ``hydra/launcher=workstation`` applies the same
    count (:func:`lstsd.machine.plan`); both count the GPUs without importing torch."""
    from lstsd.machine import plan

    machine = plan([int(threads) if threads else None], device=str(device))
    return machine.max_parallel if threads or machine.gpus_per_job else 1


def option_names() -> str:
    """The options of each config group, one line per group (``--help``): the YAML files of the config
    directory; the ``base_*`` schemas are not options."""
    lines = []
    for group in sorted(p for p in Path(CONFIG_DIR).iterdir() if p.is_dir()):
        names = sorted(f.stem for f in group.glob("*.yaml"))
        if names and group.name not in ("hydra", "hydra_setup"):
            lines.append(f"{group.name}: {', '.join(names)}")
    return "\n".join(lines)


def schema_nodes(own: bool = False) -> dict[tuple[str, str], DictConfig]:
    """Every ConfigStore entry: ``(group, name) -> node``; a registered component's name is filled in. ``own``:
    only the package's own components (the snapshot's), not those of imported modules."""
    nodes = {key: OmegaConf.structured(schema) for key, schema in RUN_WIDE.items()}
    for group, registry, field in (("dataset", DATASETS, "name"), ("model", MODELS, "arch"),
                                   ("method", METHODS, "name")):
        for name, entry in registry.items():
            if own and not getattr(entry.obj, "__module__", "").startswith("lstsd."):
                continue
            node = OmegaConf.structured(entry.schema)
            node[field] = name
            nodes[(group, f"base_{name}")] = node
    return nodes


def source_key() -> str:
    """The snapshot's key: a hash of the package's source files (their paths and contents, so that a fresh clone
    or a checkout of the same code finds the snapshot another one wrote) and its version."""
    from importlib import metadata

    digest = hashlib.sha1()
    try:
        digest.update(metadata.version("lstsd").encode())
    except metadata.PackageNotFoundError:
        pass
    for f in sorted(PACKAGE.rglob("*.py")):
        digest.update(str(f.relative_to(PACKAGE)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def snapshot_path() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "lstsd" / f"schemas-{source_key()}.yaml"


OPEN = "_open_dicts"  # the snapshot's record of each schema's dict-typed fields (open to new keys)
COUNT = "_entries"  # how many schemas it holds: a truncated snapshot is seen as damaged


def open_dicts(node: DictConfig, prefix: str = "") -> list[str]:
    """The paths of a schema's dict-typed fields (``report.better_of``, ``model.kwargs``): plain YAML would close
    them to new keys with the rest, so the snapshot lists them to reopen."""
    out = []
    for key in node:
        child = node._get_node(key)
        if OmegaConf.is_dict(child):
            path = f"{prefix}{key}"
            out += [path] if OmegaConf.get_type(child) is dict else open_dicts(child, path + ".")
    return out


def write_snapshot(nodes: dict) -> None:
    path = snapshot_path()
    if path.exists():
        return
    entries = {f"{group}/{name}": node for (group, name), node in nodes.items()}
    text = OmegaConf.to_yaml({**entries, OPEN: {key: open_dicts(node) for key, node in entries.items()},
                              COUNT: len(entries)})
    try:  # a cache that cannot be written only costs the next --help its speed
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        for stale in path.parent.glob("schemas-*.yaml"):  # snapshots of other sources: never read again
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:
        pass


def read_snapshot() -> Optional[dict]:
    """The schemas of the snapshot, or None when there is none or it is damaged (unreadable, truncated, edited:
    it is deleted, and the full setup that follows writes it again)."""
    path = snapshot_path()
    if not path.exists():
        return None
    try:
        return snapshot_nodes(OmegaConf.load(path))
    except Exception:  # noqa: BLE001 - any damage: the snapshot is only a cache of the schemas
        with contextlib.suppress(OSError):
            path.unlink()
        return None


def snapshot_nodes(loaded) -> dict:
    """The schemas a loaded snapshot holds; a ValueError where it is not a whole snapshot."""
    if not OmegaConf.is_dict(loaded) or loaded.get(COUNT) != len(loaded) - 2 or not OmegaConf.is_dict(loaded.get(OPEN)):
        raise ValueError("not a whole snapshot")
    nodes, opened = {}, loaded.pop(OPEN)
    loaded.pop(COUNT)
    for key, node in loaded.items():
        if not OmegaConf.is_dict(node):
            raise ValueError(f"{key} is not a schema")
        group, _, name = str(key).rpartition("/")
        # unknown keys are refused as with the schemas; the root stays open for Hydra's own hydra section, and
        # a dict-typed field to new keys
        for part in [node] if group else [node[k] for k in node if OmegaConf.is_dict(node._get_node(k))]:
            OmegaConf.set_struct(part, True)
        for field in opened.get(key, []):
            OmegaConf.set_struct(OmegaConf.select(node, field), False)
        nodes[(group, name)] = node
    return nodes


def setup(fast: bool = False) -> None:
    """Register the resolvers and fill the ConfigStore (idempotent). ``fast``: from the snapshot if current."""
    global _state
    if _state == "full" or (_state == "fast" and fast):
        return
    OmegaConf.register_new_resolver("lstsd_uid", sweep_uid, replace=True)
    OmegaConf.register_new_resolver("lstsd_proportion", proportion, replace=True)
    OmegaConf.register_new_resolver("lstsd_parallel", parallel_jobs, replace=True)
    nodes = read_snapshot() if fast and not IMPORTED else None
    full = nodes is None
    if full:
        write_snapshot(schema_nodes(own=True))
        nodes = schema_nodes()
    store_nodes(nodes)
    _state = "full" if full else "fast"


def store_nodes(nodes: dict) -> None:
    store = ConfigStore.instance()
    for (group, name), node in nodes.items():
        store.store(group=group or None, name=name, node=node)


def import_modules(modules) -> None:
    """Import each module of ``imports`` not imported yet (a :class:`~lstsd.errors.ConfigError` naming the one that
    cannot be); the components they register are stored in the ConfigStore where it is filled already."""
    global _state
    new = [str(m) for m in (modules or []) if str(m) not in IMPORTED]
    for module in new:
        try:
            importlib.import_module(module)
        except SystemExit as e:  # the module ended the process as it was imported
            raise ConfigError(f"imports={list(map(str, modules))!r} is invalid: {module} called sys.exit({e.code!r}) "
                              "as it was imported") from None
        except Exception as e:  # noqa: BLE001 - not found, or the module's own error while importing
            raise ConfigError(f"imports={list(map(str, modules))!r} is invalid: {module} cannot be imported "
                              f"({type(e).__name__}: {one_line(e)})") from None
        IMPORTED.append(module)
    if new and _state is not None:
        _state = None  # the snapshot lacks them: a full setup stores them with the rest
        setup()


def override_key(arg: str) -> str:
    """``model._target_`` of ``+model._target_=x``; ``model`` of ``model=resnet20`` (``model@method.teacher_model``
    of an option composed elsewhere)."""
    return arg.lstrip("+~").partition("=")[0]


def imports_of(overrides) -> list[str]:
    """The modules an ``imports=[...]`` override names (parsed as Hydra parses it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for arg in overrides:
        if arg.startswith("-") or override_key(arg) != "imports" or "=" not in arg:
            continue
        try:
            override = OverridesParser.create().parse_overrides([arg])[0]
        except Exception as e:  # noqa: BLE001 - Hydra's parse error
            raise ConfigError(f"imports: {one_line(e)}") from None
        value = None if override.is_sweep_override() else override.value()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"imports={arg.partition('=')[2]} is invalid: allowed a list of modules, "
                              "imports=[mypkg.plugins] (one value, not a sweep)")
        out += value
    return out


def prepare(overrides: list[str]) -> list[str]:
    """The overrides a command line composes with: the modules of ``imports=[...]`` imported first (so that their
    schemas and YAML options compose), and ``model=target`` chosen where ``model._target_=...`` is given without a
    model option."""
    import_modules(imports_of(overrides))
    keys = [override_key(a) for a in overrides if not a.startswith("-")]
    if "model._target_" in keys and "model" not in keys:
        first = next(i for i, a in enumerate(overrides) if override_key(a) == "model._target_")
        overrides = [*overrides[:first], "model=target", *overrides[first:]]
    return list(overrides)


def group_options(group: str) -> list[str]:
    """The options of a config group as Hydra finds them, without the ``base_*`` schemas (an unknown option inside
    a list, ``logger=[wandb,nope]``, reaches the command line without them)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    setup(fast=True)
    if GlobalHydra.instance().is_initialized():
        options = GlobalHydra.instance().config_loader().get_group_options(group)
    else:
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            options = GlobalHydra.instance().config_loader().get_group_options(group)
    return [o for o in options if not o.startswith("base_")]


def compose(overrides: list[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """``lstsd/conf/config.yaml`` with ``overrides``, the one way a configuration is composed: inside the lstsd
    application (a job composing its teacher's run, the sweeper) with that application's search path; anywhere
    else (a test, a loop of one's own, another Hydra application) from lstsd's own config directory, any Hydra
    state there was put back afterwards."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    overrides = prepare(list(overrides))
    if _state is None:  # set up already (fast for a print-only command line): as it is
        setup()
    hydra = GlobalHydra.instance()
    if hydra.is_initialized() and any(s.provider == "main" and s.path == CONFIG_DIR
                                      for s in hydra.config_loader().get_sources()):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)
    outer = get_gh_backup()
    hydra.clear()
    try:
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)
    finally:
        restore_gh_from_backup(outer)
