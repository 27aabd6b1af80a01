"""lstsd: one-generation teacher-student training (LSTSD and its relatives), as a Hydra-configured framework
(the ``lstsd`` command) and as a library for a training loop of one's own:

* :func:`method` builds any method from plain arguments: ``lstsd.method("lstsd", num_samples=..., num_classes=...,
  epochs=..., lambda_long=...)``, the object the lstsd trainer drives (:class:`Method`);
* :class:`IndexedDataset` gives any map-style dataset's items their sample ids, ``(input, target, index)``;
* :class:`ConfigError` is raised for a bad name, key or value;
* :func:`register_method` and :class:`MethodConfig` add a method of one's own (a :class:`Method` subclass and its
  schema), which :func:`method` then builds by its name.

The Lightning callback is :class:`lstsd.integrations.lightning.Distillation` (the lightning extra:
``pip install -e '.[lightning]'``).
``import lstsd`` imports nothing heavy: the names below are loaded on first use (the command line's print-only
commands start without torch).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["ConfigError", "IndexedDataset", "Method", "MethodConfig", "method", "register_method"]

if TYPE_CHECKING:
    from lstsd.config import MethodConfig
    from lstsd.data.indexed import IndexedDataset
    from lstsd.errors import ConfigError
    from lstsd.library import method
    from lstsd.methods.base import Method
    from lstsd.registry import register_method

_WHERE = {"ConfigError": "lstsd.errors", "IndexedDataset": "lstsd.data.indexed", "Method": "lstsd.methods.base",
          "MethodConfig": "lstsd.config", "method": "lstsd.library", "register_method": "lstsd.registry"}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'lstsd' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
