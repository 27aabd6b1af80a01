"""``lstsd`` (= ``python -m lstsd``): the Hydra application, the composition root of a run.

:func:`main` sets up the configuration (:func:`lstsd.config.compose.setup`; from the schema snapshot, without torch,
for ``--help``, ``--cfg``, ``--info`` and tab completion) and starts Hydra; each job calls
:func:`lstsd.training.run.run`.

Exit codes: 0 success; 2 bad configuration or input (one line on stderr, no traceback); 1 a failure during
training. Hydra would exit 1 for both kinds, so errors are re-raised to this wrapper, which tells them apart;
``HYDRA_FULL_ERROR=1`` keeps full tracebacks for debugging.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from lstsd.config import compose
from lstsd.errors import (ConfigError, TrainingError, ends_without_teardown, missing_extra, one_line,
                          quiet_when_piped_into_a_closed_reader)
from lstsd.launch.sweeper import as_one_value_sweeps, failed_jobs, single_method_keys

PRINT_ONLY = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"}
HELP = """\
lstsd: one-generation teacher-student training (LSTSD, Snapshot Distillation, Mean Teacher, Temporal
Ensembling, DLB, LW-KD, KD, Tf-KD, label smoothing), configured by Hydra. Exit codes: 0 done, 2 bad
configuration or input (one line), 1 a failure during training.

  lstsd                                        one run: MNIST-1D, its reference CNN, vanilla
  lstsd method=lstsd seed=1                    the same run with LSTSD, seed 1
  lstsd -m method=vanilla,lstsd seed=0,1,2     a sweep of 2 methods x 3 seeds, a table at the end
  lstsd experiment=lstsd_table1 dataset.root=~/data   the paper's Table 1 (CIFAR-100)
  lstsd --cfg job method=lstsd                 print the composed config without running
  lstsd-report multirun/<name>/<folder>        tables and plots of runs and sweeps

== Configuration groups (group=option) ==
{groups}

== Config (any key: key=value; a sweep: key=a,b,c with -m) ==
{config}
Hydra's own flags and groups: lstsd --hydra-help"""


@hydra.main(version_base="1.3", config_path=compose.CONFIG_DIR, config_name="config")
def app(cfg: DictConfig) -> float:
    from lstsd.training.run import run  # torch and the components: only once a job runs

    try:
        results = run(cfg)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - stop here, before Hydra wraps it in a multi-line report
        if os.environ.get("LSTSD_DEBUG") == "1" or in_sweep():
            raise  # a sweep's job: marked failed with this error, and the other jobs go on
        fail(run_error(e))
    metric = results.get("headline", "acc")  # what a hyper-parameter sweeper maximises: the headline metric
    return results.get(f"val_{metric}_final", results[f"test_{metric}_final"])


def run_error(e: BaseException) -> ConfigError | TrainingError:
    """The one line a run ends with: its own error; one's own code (a model or dataset ``_target_``, a method)
    ending the process; any other exception, its traceback written to the run's log (called while handling it)."""
    if isinstance(e, (ConfigError, TrainingError)):
        return e
    if isinstance(e, SystemExit):
        return TrainingError(f"the run's own code called sys.exit({e.code!r}) (a model._target_, dataset._target_ or "
                             "a component of an imports= module): allowed code that returns or raises")
    return TrainingError(f"{type(e).__name__}: {one_line(e)} ({traceback_logged()}; HYDRA_FULL_ERROR=1 prints it)")


def traceback_logged() -> str:
    """Write the exception being handled, with its traceback, to the run's log files only (not the console);
    say where."""
    import logging
    import traceback

    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    record = logging.LogRecord("lstsd", logging.ERROR, __file__, 0, traceback.format_exc().rstrip(), None, None)
    for handler in files:
        handler.handle(record)
    return f"its traceback is in {files[0].baseFilename}" if files else "no log file holds its traceback"


def fail(e: ConfigError | TrainingError) -> NoReturn:
    """The one way the command line ends on an error: one line on stderr; exit code 2 for bad configuration or
    input (ConfigError), 1 for a failure during training (TrainingError)."""
    if isinstance(e, TrainingError):
        print(f"lstsd: training failed: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"lstsd: error: {e}", file=sys.stderr)
    sys.exit(2)


def composition_error(e: Exception, argv: list[str]) -> ConfigError:
    """A configuration error (Hydra's, OmegaConf's or lstsd's) as one line: the options of a group where an option
    is unknown (inside a list too), the closest key where a key is misspelt, the extra to install."""
    missing = getattr(e, "missing_cfg_file", None)
    if missing and "/" in missing and getattr(e, "options", None) is None:  # inside a list of options
        e.options = compose.group_options(missing.rpartition("/")[0])
    cause = e.__cause__ if isinstance(e.__cause__, (ConfigError, OmegaConfBaseException)) else None
    detail = one_line(e)
    if cause is not None and str(cause) not in str(e) and one_line(cause) not in detail:
        detail += f" ({one_line(cause)})"
    detail = misspelt_key(detail, argv)
    if "hydra/sweeper=optuna" in detail:  # the Optuna plugin is not installed
        detail += f"; {missing_extra('optuna', 'experiment=hparams_search')}"
    return ConfigError(detail)


def in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def is_multirun(argv: list[str]) -> bool:
    """Whether ``argv`` launches a sweep: ``-m``, or the mode an experiment sets (composed when one is named)."""
    if {"-m", "--multirun", "hydra.mode=MULTIRUN"} & set(argv):
        return True
    if not any(a.startswith("experiment=") for a in argv) or any(a.startswith("-") for a in argv):
        return False
    skip = set(single_method_keys(argv)) | set(sweep_overrides(argv))  # composed as the sweep's base config
    try:
        cfg = compose.compose([a for i, a in enumerate(argv) if i not in skip], return_hydra_config=True)
        return str(cfg.hydra.mode).rpartition(".")[2] == "MULTIRUN"
    except Exception:  # noqa: BLE001 - the real launch reports the problem
        return False


def sweep_overrides(argv: list[str]) -> list[int]:
    """Positions in ``argv`` of sweep-valued overrides (``seed=0,1``, ``method.minigen_epochs=choice(1,2)``), as
    Hydra's parser reads them; a line it cannot parse has none (the launch reports the problem)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for i, arg in enumerate(argv):
        try:
            if "=" in arg and not arg.startswith("-") and parser.parse_override(arg).is_sweep_override():
                out.append(i)
        except Exception:  # noqa: BLE001 - not an override Hydra reads
            continue
    return out


def sweep_axes(argv: list[str]) -> str | None:
    """For a command line whose experiment sweeps (``experiment=demo``): its axes, its number of jobs and how to
    narrow it, in one line (``--help`` and ``--cfg`` print the base configuration of one job only)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        cfg = compose.compose([a for a in argv if not a.startswith("-")], return_hydra_config=True)
    except Exception:  # noqa: BLE001 - the command line's own error is reported elsewhere
        return None
    params = dict(cfg.hydra.sweeper.get("params") or {})
    if str(cfg.hydra.mode).rpartition(".")[2] != "MULTIRUN" or not params:
        return None
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    counts = {o.key_or_group: len(list(o.sweep_iterator())) if o.is_sweep_override() else 1 for o in parsed}
    jobs = 1
    for n in counts.values():
        jobs *= n
    fitted = " at most" if any(k.startswith("method.") for k in counts) else ""  # keys only some methods have
    name = next((a for a in argv if a.startswith("experiment=")), f"experiment={cfg.get('name')}")
    first = {k: str(v).split(",")[0] for k, v in params.items() if counts[k] > 1}
    narrow = " ".join(f"{k}={v}" for k, v in first.items())
    return (f"{name}: a sweep of{fitted} {jobs} jobs = " + ", ".join(f"{k} x {n}" for k, n in counts.items()) +
            f"; --cfg shows one job's configuration; narrow the sweep with: lstsd -m {name} {narrow}")


def print_help(argv: list[str]) -> None:
    """``--help``: the examples, each group's options and the config the other arguments compose. Hydra's own
    help composes every option of every group to list them (seconds); here the options are the YAML files."""
    from omegaconf import OmegaConf

    overrides = [a for a in argv if a not in ("--help", "-h") and not a.startswith("-")]
    config = OmegaConf.to_yaml(compose.compose(overrides))
    axes = sweep_axes(overrides)
    print(HELP.format(groups=compose.option_names(), config=config) + (f"\n== The sweep ==\n{axes}" if axes else ""))


def misspelt_key(detail: str, argv: list[str]) -> str:
    """Hydra's error for an unknown key (``Could not override 'method.lamda_long'. To append to your config use
    +method.lamda_long=...``) as :func:`lstsd.config.unknown_key`'s line, which names the closest valid key
    instead of suggesting to append the misspelt one; other errors unchanged."""
    from omegaconf import DictConfig

    from lstsd.config import unknown_key

    match = re.match(r"Could not override '([^']+)'", detail)
    if match is None or "not in" not in detail:
        return detail
    key = match.group(1)
    parent = key.rpartition(".")[0]
    try:
        node = compose.compose([a for a in argv if not a.startswith("-") and a.partition("=")[0] != key])
        for part in filter(None, parent.split(".")):
            node = node[part]
    except Exception:  # noqa: BLE001 - no better message to give than Hydra's
        return detail
    return str(unknown_key(key, node.keys())) if isinstance(node, DictConfig) else detail


def complete() -> None:
    """Tab completion (``-sc query=bash``, with the line in ``COMP_LINE``): Hydra's candidates without the
    ``base_*`` schemas, which are not options (``method=base_lstsd`` fails with a missing value)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        app()
    words = [w for w in out.getvalue().split() if not re.search(r"(^|[=/])base_", w)]
    print(" ".join(words))


def refuse_early(argv: list[str], multirun: bool, debug: bool) -> None:
    """What can be refused before torch is imported: a name that is no folder name, and (a single run's) a
    misspelt key or an unknown option, composed from the schema snapshot."""
    from lstsd.config import require_name

    try:
        for a in argv:  # before Hydra makes the output folder, which holds the name
            if a.startswith("name=") and not ("," in a and multirun):
                require_name(a.partition("=")[2])
        if not multirun:
            compose.compose([a for a in argv if not a.startswith("-")])
    except (ConfigError, HydraException, OmegaConfBaseException) as e:
        if debug:
            raise
        fail(composition_error(e, argv))


def relaunch_argv(argv: list[str]) -> list[str]:
    """``lstsd relaunch <run or job folder> [key=value ...]``: the folder's own command line (its
    ``.hydra/overrides.yaml``), run in that folder (resumed, extended or skipped as a relaunch is), a single run
    even for a sweep's job; extra overrides go after it. The folder's name may hold ``=`` and ``,`` (a sweep's job
    folder): it is quoted for Hydra here."""
    from lstsd.training.rundir import RunDir

    if len(argv) < 2 or argv[1].startswith("-"):
        fail(ConfigError("relaunch needs a run or job folder: lstsd relaunch <folder> [key=value ...]"))
    folder = Path(argv[1]).expanduser().resolve()
    files = RunDir(folder)
    if not files.overrides.is_file():
        fail(ConfigError(f"{folder}: not a run folder (no .hydra/overrides.yaml): allowed a folder lstsd ran in"))
    quoted = "'" + str(folder).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return [*files.read_overrides(), *argv[2:], "hydra.mode=RUN", f"hydra.run.dir={quoted}"]


@quiet_when_piped_into_a_closed_reader
def main() -> None:
    if sys.argv[1:2] == ["relaunch"]:
        sys.argv[1:] = relaunch_argv(sys.argv[1:])
    try:  # the modules of imports=[...] before anything composes; model._target_=... alone chooses model=target
        argv = sys.argv[1:] = compose.prepare(sys.argv[1:])
        compose.setup(fast=True)  # the schemas from their snapshot: nothing imports torch yet
    except ConfigError as e:  # an imported module's component under a name lstsd has
        fail(e)
    if {"--help", "-h"} & set(argv):
        try:
            return print_help(argv)
        except (ConfigError, HydraException, OmegaConfBaseException) as e:
            fail(ConfigError(one_line(e)))
    if {"--shell-completion", "-sc"} & set(argv) and any(a.startswith("query") for a in argv):
        return complete()
    if {"--cfg", "-c"} & set(argv) and (axes := sweep_axes([a for a in argv if a not in ("--cfg", "-c", "job",
                                                                                           "hydra", "all")])):
        print(axes, file=sys.stderr)
    multirun = is_multirun(argv)
    debug = os.environ.get("HYDRA_FULL_ERROR") == "1"
    if not PRINT_ONLY & {a.partition("=")[0] for a in argv}:
        refuse_early(argv, multirun, debug)
        try:
            compose.setup()  # the components themselves, for the run
        except ConfigError as e:
            fail(e)
    sys.argv[1:] = as_one_value_sweeps(argv, multirun)
    os.environ["LSTSD_DEBUG"] = "1" if debug else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        run_app()
    except BrokenPipeError:
        raise  # the reader of the output stopped early (| head): quiet_when_piped_into_a_closed_reader
    except Exception as e:  # noqa: BLE001 - each kind of error as its one line (one_line_of)
        if debug:
            raise
        fail(one_line_of(e, argv))
    except KeyboardInterrupt:  # Ctrl-C: a run in training checkpointed first (lstsd.training.signals)
        if debug:
            raise
        print("lstsd: interrupted (Ctrl-C); the same command resumes from the last checkpoint", file=sys.stderr)
        sys.exit(130)


def run_app() -> None:
    """Hydra's application: the run or the sweep; exit code 1 when a sweep ran every job and some failed."""
    app()
    if failed_jobs():  # the sweep printed its table: its exit code says some failed
        sys.exit(1)


def one_line_of(e: Exception, argv: list[str]) -> ConfigError | TrainingError:
    """The one line an error out of Hydra's application ends the command line with."""
    if isinstance(e, (ConfigError, HydraException, OmegaConfBaseException)):
        return composition_error(e, argv)
    if isinstance(e, TrainingError):
        return e
    os_error = e if isinstance(e, OSError) else e.__cause__ if isinstance(e.__cause__, OSError) else None
    if os_error is not None:  # before a job ran (Hydra creating the output folder, its log file): bad input
        return ConfigError(f"{os_error.filename or 'a file'}: {os_error.strerror or os_error} (the run folder, or "
                           "its log file, cannot be written)")
    # Hydra's machinery around the job (its logging settings): bad input
    cause = f" ({type(e.__cause__).__name__}: {one_line(e.__cause__)})" if e.__cause__ is not None else ""
    return ConfigError(f"Hydra could not start the run: {type(e).__name__}: {one_line(e)}{cause} (check the "
                       "hydra.* overrides; HYDRA_FULL_ERROR=1 shows the traceback)")

if __name__ == "__main__":
    main()


@quiet_when_piped_into_a_closed_reader
def evaluate_main(argv=None) -> None:
    """``lstsd-eval <run folder or checkpoint> [--json]``: the test (and validation) scores of a run's model, and of
    the models its method evaluates beside it (an EMA teacher, a snapshot ensemble), from its ``last.pt``, or of
    the model alone from ``best.pt`` (which holds its weights only), with the run's own configuration. Nothing is
    written.
    A folder without a checkpoint, or a checkpoint that does not fit the run (another lstsd version's): exit 2."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="lstsd-eval", description=evaluate_main.__doc__.splitlines()[0])
    parser.add_argument("path", help="a run folder (its last.pt), or a checkpoint file of a run folder")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    args = parser.parse_args(argv)
    try:
        scores = evaluate_run(Path(args.path).expanduser())
    except ConfigError as e:
        parser.exit(2, f"lstsd-eval: error: {e}\n")
    if args.json:
        print(json.dumps(scores, indent=2))
        return
    width = max(map(len, scores))
    for key, value in scores.items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")


entry = ends_without_teardown(main)  # the console scripts (pyproject.toml) and python -m lstsd
evaluate_entry = ends_without_teardown(evaluate_main)


def evaluate_run(path: Path) -> dict:
    """The scores of :func:`evaluate_main`: ``<split>_<metric>`` and ``<model>_<split>_<metric>``, and the epoch."""
    from lstsd.training import checkpoint
    from lstsd.training.run import assemble
    from lstsd.training.rundir import CHECKPOINT, RunDir

    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder (allowed a run folder, or its last.pt or best.pt)")
    folder, file = (path, path / CHECKPOINT) if path.is_dir() else (path.parent, path)
    files = RunDir(folder)
    if files.read_config() is None:
        raise ConfigError(f"{folder}: not a run folder (no .hydra/config.yaml): allowed a folder lstsd ran in")
    if not file.is_file():
        raise ConfigError(f"{file}: no such checkpoint (the run folder {folder} holds none: it never finished an "
                          "epoch with trainer.checkpoint=true)")
    conf = saved_configuration(files)
    trainer = assemble(conf, folder, files.read_overrides())
    state = checkpoint.load(file)
    whole = "optimizer" in state  # last.pt: the whole run's state, the method's evaluated models included
    try:
        if whole:
            trainer.load_state_dict(state)
        else:  # best.pt: the model's weights only, so only the model is scored
            trainer.model.load_state_dict(state["model"])
    except Exception as e:  # noqa: BLE001 - another architecture, another version's layout
        written = (state.get("provenance") or {}).get("lstsd")
        raise ConfigError(f"{file}: it does not fit this run's configuration with this lstsd ({type(e).__name__}: "
                          f"{one_line(e)})" + (f"; it was written by lstsd {written}" if written else "")) from None
    return {"epoch": state.get("epoch", trainer.start_epoch), **trainer.evaluate_all(method_models=whole)}


def saved_configuration(files):
    """The configuration a run folder's run was trained with (its saved ``.hydra/config.yaml``, typed and validated
    as when it ran), its trackers off: an evaluation reports nowhere. A saved key this lstsd does not know is a
    ConfigError."""
    from lstsd.config import typed, validate

    compose.setup()
    compose.import_modules(files.read_config().get("imports") or [])
    try:
        conf = validate(typed(files.read_config()))
    except ConfigError as e:
        raise ConfigError(f"{files.config}: not a configuration of this lstsd ({e})") from None
    conf.logger.wandb = conf.logger.tensorboard = conf.logger.csv = False
    return conf
