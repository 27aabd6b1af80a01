"""The two kinds of failure and the validation helpers (a leaf: imports nothing of lstsd).

:class:`ConfigError`: a bad configuration or input, reported as one line with exit code 2 before training
starts. :class:`TrainingError`: a failure during training, exit code 1.
"""
from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A bad configuration or input: reported as one line, exit code 2, before training starts."""


class TrainingError(RuntimeError):
    """A failure during training (exit code 1)."""


def require(ok: bool, key: str, allowed: str, value: Any) -> None:
    """Raise ``ConfigError("<key>=<value> is invalid: allowed <allowed>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: allowed {allowed}")


def require_choice(key: str, value: Any, choices) -> None:
    require(value in choices, key, "one of " + ", ".join(map(str, choices)), value)


def finite(*values: float) -> bool:
    """Whether every value is a finite number (NaN and +-inf are not)."""
    return all(math.isfinite(v) for v in values)


def one_line(e: BaseException) -> str:
    """Hydra and OmegaConf errors span several lines; the command line reports exactly one."""
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
