"""Method registry: the one place a training policy is registered, with its config schema.

``@register_method(name, Schema)`` on a :class:`~lstsd.methods.base.Method` subclass makes ``method.name=<name>``
valid, stores ``base_<name>`` in Hydra's ConfigStore (conf/method/*.yaml extend it) and lets :func:`build_method`
construct it. Methods never appear in the training loop by name.
"""
from __future__ import annotations

METHODS: dict[str, tuple] = {}  # name -> (Method subclass, config dataclass)


def register_method(name: str, schema):
    def wrap(cls):
        METHODS[name] = (cls, schema)
        cls.name = name
        return cls

    return wrap


def build_method(cfg, ctx):
    return METHODS[cfg.name][0](cfg, ctx)


from lstsd.methods import consistency, dlb, kd, lstsd, lwkd, snapshots, vanilla  # noqa: E402,F401  (registration)
