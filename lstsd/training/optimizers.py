"""torch.optim's optimisers without the import of ``torch._dynamo`` that their first calls make.

torch marks some methods of every ``torch.optim.Optimizer`` for ``torch.compile``: ``add_param_group``,
``zero_grad``, ``state_dict`` and ``load_state_dict`` are wrapped by ``torch._disable_dynamo``, and each
optimiser's ``step`` by ``torch.optim.optimizer._use_grad_for_differentiable``, which calls
``torch._dynamo.graph_break()`` around it. Both wrappers import ``torch._dynamo`` (with sympy) on their first call,
so building any optimiser costs about 1.1 s of CPU on the 2-core machine of docs/performance.md: a third of a
1-epoch run's start-up, in every sweep job and subprocess. The trainer never traces an optimiser (``trainer.compile``
compiles the model alone), so the marks do nothing for it.

:func:`eager` gives the optimiser class with those methods unwrapped to the functions torch wraps (found by the
wrappers' code objects along each method's ``functools.wraps`` chain); ``step`` keeps what ``_use_grad`` does besides
the graph breaks: gradients off for the update, or on with ``differentiable=True``. The updates, states and
checkpoints are the stock class's to the bit (``tests/test_process_costs.py``: SGD, Adam and AdamW, foreach and
fused).
This is a project choice for start-up time, not a change of method: a class that torch does not wrap this way (a
user's own, or a later torch) is returned unchanged, and torch's profiler hook on ``step`` stays.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
from torch.optim.optimizer import Optimizer, _use_grad_for_differentiable


def _noop() -> None:
    """Only its wrappers' code objects are used: what identifies torch's wrappers along a chain."""


_DISABLE_DYNAMO = torch._disable_dynamo(_noop).__code__
_USE_GRAD = _use_grad_for_differentiable(_noop).__code__
MARKED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def unwrapped(fn: Callable, code) -> Optional[Callable]:
    """The function that the wrapper with ``code`` wraps, along ``fn``'s chain of ``__wrapped__``; None if absent."""
    while fn is not None:
        if getattr(fn, "__code__", None) is code:
            return fn.__wrapped__
        fn = getattr(fn, "__wrapped__", None)
    return None


@functools.cache
def eager(cls: type) -> type:
    """``cls`` (a ``torch.optim.Optimizer`` subclass) without torch's marks for torch.compile: a subclass of the same
    name whose marked methods are the plain functions; ``cls`` itself when it has none."""
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        return cls
    body = {name: fn for name in MARKED if (fn := unwrapped(getattr(cls, name), _DISABLE_DYNAMO)) is not None}
    raw_step = unwrapped(cls.step, _USE_GRAD)
    if raw_step is not None:
        @functools.wraps(raw_step)
        def step(self, *args, **kwargs):
            with torch.set_grad_enabled(self.defaults["differentiable"]):  # as _use_grad, less its graph breaks
                return raw_step(self, *args, **kwargs)

        body["step"] = step
    if not body:
        return cls
    return type(cls.__name__, (cls,), {"__module__": __name__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__,
                                       **body})


def build(partial: Callable, params) -> Optimizer:
    """The optimiser of ``partial`` (Hydra's instantiated ``optim`` config: the class with its arguments) over
    ``params``, as :func:`eager`'s class."""
    if isinstance(partial, functools.partial):
        return eager(partial.func)(params, *partial.args, **partial.keywords)
    return partial(params)
