"""The registries of datasets, models and methods: a name, the object that builds it and its config schema.

A component is its module plus its YAML. ``@register_method(name, Schema)`` on a
:class:`~lstsd.methods.base.Method` subclass, ``@register_model(name, Schema)`` on a model builder and
``@register_dataset(name, Schema)`` on a dataset reader make ``<group>=<option>`` composable (the composition
root stores ``Schema`` in Hydra's ConfigStore as ``base_<name>``, with the name filled in) and let the run
build it by name. Nothing lists the components: a registry imports every module of its package the first time
it is read (:meth:`Registry.discover`), so a new module is found where it lies. Registries import nothing of
lstsd but the errors.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, Iterator, NamedTuple

from lstsd.errors import ConfigError


class Entry(NamedTuple):
    obj: Any  # a Method subclass, a model builder, a dataset reader
    schema: type  # its config dataclass


class Registry:
    """``name -> Entry(obj, schema)``, filled by :meth:`register` and by importing the package's modules."""

    def __init__(self, key: str, package: str):
        self.key, self.package = key, package  # key: the config key that names an entry (method.name)
        self.entries: dict[str, Entry] = {}
        self.discovered = False

    def register(self, name: str, schema: type) -> Callable:
        """Decorator: ``@REGISTRY.register(name, Schema)``; also callable on an object directly."""

        def wrap(obj):
            if name in self.entries and self.entries[name].obj is not obj:
                first, second = (f"{getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', o)}"
                                 for o in (self.entries[name].obj, obj))
                raise ConfigError(f"{self.key}={name!r} is registered twice, by {first} and by {second}: allowed "
                                  "one component per name (give one of them another name)")
            self.entries[name] = Entry(obj, schema)
            return obj

        return wrap

    def discover(self) -> "Registry":
        """Import every module of the package once (their decorators register them)."""
        if not self.discovered:
            self.discovered = True
            package = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(package.__path__, prefix=self.package + "."):
                importlib.import_module(info.name)
        return self

    def get(self, name: str) -> Entry:
        """The entry of ``name``; a :class:`ConfigError` naming the allowed names otherwise."""
        if name not in self:
            raise ConfigError(f"{self.key}={name!r} is invalid: allowed one of {', '.join(self)}")
        return self.entries[name]

    def __getitem__(self, name: str) -> Any:
        return self.get(name).obj

    def __contains__(self, name: object) -> bool:
        return name in self.discover().entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.discover().entries)

    def __len__(self) -> int:
        return len(self.discover().entries)

    def items(self):
        return self.discover().entries.items()

    def keys(self):
        return self.discover().entries.keys()


DATASETS = Registry("dataset.name", "lstsd.data.readers")
MODELS = Registry("model.arch", "lstsd.models")
METHODS = Registry("method.name", "lstsd.methods")
register_dataset, register_model = DATASETS.register, MODELS.register


def register_method(name: str, schema: type) -> Callable:
    """``@register_method(name, Schema)`` on a Method subclass; the class learns its name (``cls.name``)."""

    def wrap(cls):
        cls.name = name
        return METHODS.register(name, schema)(cls)

    return wrap
