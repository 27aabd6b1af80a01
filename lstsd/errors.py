"""The two kinds of failure and the validation helpers (a leaf: imports nothing of lstsd).

:class:`ConfigError`: a bad configuration or input, reported as one line with exit code 2 before training
starts. :class:`TrainingError`: a failure during training, exit code 1.
"""
from __future__ import annotations

import atexit
import functools
import importlib
import importlib.util
import math
import os
import sys
import threading
from types import ModuleType
from typing import Any, Callable


class ConfigError(ValueError):
    """A bad configuration or input: reported as one line, exit code 2, before training starts."""


class RefusedRelaunch(ConfigError):
    """A relaunch that does not fit the run its folder holds: refused before training, the folder left as it is
    (no failure is recorded there)."""


class TrainingError(RuntimeError):
    """A failure during training (exit code 1)."""


def require(ok: bool, key: str, allowed: str, value: Any) -> None:
    """Raise ``ConfigError("<key>=<value> is invalid: allowed <allowed>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: allowed {allowed}")


def require_choice(key: str, value: Any, choices) -> None:
    require(value in choices, key, "one of " + ", ".join(map(str, choices)), value)


# the optional packages and the extra of pyproject.toml that installs each (a default run needs none of them)
EXTRAS = {"wandb": "wandb", "tensorboard": "tensorboard", "timm": "timm", "sklearn": "sklearn",
          "transformers": "nlp", "datasets": "hf", "lightning": "lightning", "optuna": "search"}


DISTRIBUTIONS = {"sklearn": "scikit-learn", "optuna": "hydra-optuna-sweeper"}  # where pip's name differs


def missing_extra(package: str, what: str) -> ConfigError:
    """The one line for an optional package that is not installed: what needs it, and the extra to install."""
    extra = EXTRAS[package]
    return ConfigError(f"{what} needs the {extra} extra ({DISTRIBUTIONS.get(package, package)}), which is not "
                       f"installed: pip install -e '.[{extra}]'")


def need_extra(package: str, what: str) -> None:
    """Raise :func:`missing_extra`'s error unless ``package`` is installed (found, not imported: no cost)."""
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a broken or half-installed package counts as missing
        found = False
    if not found:
        raise missing_extra(package, what)


def import_extra(module: str, what: str) -> ModuleType:
    """``import module`` (a module of one of the :data:`EXTRAS` packages), or :func:`missing_extra`'s error where
    its package is not installed; an error inside an installed package is left as it is."""
    package = module.partition(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] != package:
            raise
        raise missing_extra(package, what) from None


def finite(*values: float) -> bool:
    """Whether every value is a finite number (NaN and +-inf are not)."""
    return all(math.isfinite(v) for v in values)


TYPE_NAMES = {"Float": "a number", "Integer": "an integer", "bool": "true or false", "str": "a string"}


def wrong_type(e: BaseException) -> str | None:
    """OmegaConf's error for a value of the wrong type (``optim.lr=abc``), as ``optim.lr='abc' is invalid: allowed
    a number``; None for other errors."""
    import re

    msg, key = str(getattr(e, "msg", "") or ""), getattr(e, "full_key", None)
    match = re.match(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", msg) or \
        re.match(r"Value '(.*)' is not a valid (bool)", msg)
    if not key or match is None:
        return None
    value, kind = match.groups()
    return f"{key}={value!r} is invalid: allowed {TYPE_NAMES.get(kind, 'a value of type ' + kind)}"


def one_line(e: BaseException) -> str:
    """Hydra and OmegaConf errors span several lines; the command line reports exactly one."""
    for error in (e, e.__cause__):
        if error is not None and (typed := wrong_type(error)):
            return typed
    options, missing = getattr(e, "options", None), getattr(e, "missing_cfg_file", None)
    if options and missing and "/" in missing:  # an unknown option of a config group
        group, option = missing.rsplit("/", 1)
        choices = [o for o in options if not o.startswith("base_")]  # schemas are not user options
        return f"{group}={option} is invalid: allowed one of {', '.join(choices)}"
    key = getattr(e, "full_key", None)
    msg = getattr(e, "msg", None) or str(e)
    text = " ".join(part.strip() for part in str(msg).splitlines() if part.strip())
    text = text.replace("\t", " ")
    return f"{key}: {text}" if key and key not in text else text


def quiet_when_piped_into_a_closed_reader(main: Callable) -> Callable:
    """A console script's ``main``: when the reader of its output stops early (``lstsd --help | head``), it ends
    quietly with exit code 0 instead of a "Broken pipe" error (the output was cut by the reader's choice)."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush writes nowhere
            sys.exit(0)
    return wrapper


def ends_without_teardown(main: Callable[[], None]) -> Callable[[], None]:
    """A console command's entry point: ``main()``, then the end of the process without the interpreter's teardown of
    its modules, which takes about 0.5 s of CPU once torch is imported (``python -c "import torch"`` spends 0.47 s
    of its 1.6 s there on the machine of docs/performance.md). What an exit must do still happens first: the exit
    handlers run (logging's flush, trackers, data-loader workers, temporary folders), the standard streams are
    flushed, and the exit status is ``sys.exit``'s. With another non-daemon thread still running, or on an exception
    other than SystemExit (its traceback), the process ends the usual way. Only the console scripts use it:
    ``main()`` called in a process of one's own returns (or raises SystemExit) as before."""
    @functools.wraps(main)
    def entry() -> None:
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code
        if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
            sys.exit(code)
        if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, status 1
            print(code, file=sys.stderr)
            code = 1
        atexit._run_exitfuncs()  # noqa: SLF001 - the handlers the interpreter's own exit would run
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a reader gone (| head), a stream closed: nothing more to write
                pass
        os._exit(code or 0)
    return entry
