"""Methods: the training policies, each a :class:`~lstsd.methods.base.Method` subclass registered with its
config schema (``@register_method(name, Schema)``, :mod:`lstsd.registry`) in its own module, which the registry
finds by itself. Methods never appear in the training loop by name. The lstsd trainer builds them here from a
run's configuration; :func:`lstsd.method` builds the same objects from plain arguments for a loop of one's own."""
from __future__ import annotations

from lstsd.registry import METHODS


def build_method(cfg, ctx):
    return METHODS[cfg.name](cfg, ctx)
