"""The methods in a training loop of one's own: :func:`method` builds the same :class:`~lstsd.methods.base.Method`
object the lstsd trainer drives, from plain arguments.

The method's settings are those of ``lstsd method=<name> trainer.epochs=<epochs>``: the YAML option of that name
(``lstsd/conf/method/<name>.yaml``: the paper's values, variants such as ``lstsd_wo_long``, ramp-ups in
proportion to the run) composed by Hydra, each keyword hyper-parameter put over it, and the result validated by
the method's schema exactly as the command line's (a bad value raises :class:`~lstsd.errors.ConfigError` naming
its key, ``method.<key>``). A method registered from outside the package without a YAML option starts from its
schema's defaults.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from lstsd.config import compose, unknown_key, validate
from lstsd.data.types import DataInfo
from lstsd.data.indexed import IndexedDataset
from lstsd.errors import ConfigError, one_line, require
from lstsd.methods import build_method
from lstsd.methods.base import Method, RunContext
from lstsd.registry import METHODS
from lstsd.training.teachers import Student, resolve

NEEDED = {"model": "the network being trained (model=)", "dataset": "the training set as an lstsd.IndexedDataset "
          "(dataset=): it re-reads samples by index"}


def method(name: str, *, num_samples: int, num_classes: int, epochs: int, model: Optional[nn.Module] = None,
           dataset: Optional[IndexedDataset] = None, device: Optional[torch.device | str] = None, seed: int = 0,
           teacher: Optional[nn.Module] = None, **hparams: Any) -> Method:
    """The method ``name`` (any ``method=`` option of the command line: ``lstsd``, ``lstsd_wo_long``, ``sd``,
    ``mean_teacher``, ``temporal_ensembling``, ``dlb``, ``label_smoothing``, ...) for a training set of
    ``num_samples`` samples of ``num_classes`` classes trained for ``epochs`` epochs, with ``hparams`` over its
    configuration (``lambda_long=2.4``, ``minigen_epochs=6``, ...: the keys of ``method.<key>``).

    ``model``: the network trained, where the method takes snapshots, an EMA teacher or new predictions from it
    (SD, Snapshot Ensembles, LSTSD (single), Mean Teacher, DLB). ``dataset``: the training set as an
    :class:`~lstsd.data.indexed.IndexedDataset`, where the method re-reads samples (DLB). ``device``: where banks
    and teachers live (default: the model's, else the CPU). ``seed``: the seed of the method's own random draws
    (the augmentation of re-read samples). ``teacher``: a given teacher network for KD-style methods.
    :meth:`~lstsd.methods.base.Method.requires` names what a method needs; its absence raises a ConfigError.

    Drive the result with ``on_epoch_start(epoch)``, ``compute_loss(logits, targets, index, inputs=None)``,
    ``after_optimizer_step()``, ``on_epoch_end(epoch)``; evaluate ``evaluators()``; save ``state_dict()`` and
    ``rank_state()``. ``method.lr_cycles``, when set, are the learning-rate cycles (epochs) the method prescribes
    (SD, Snapshot Ensembles: run your schedule afresh in each). Hooks out of order raise ``RuntimeError``, and
    non-finite logits ``ValueError`` before anything is recorded (:mod:`lstsd.methods.base` gives the order).
    """
    require(isinstance(num_samples, int) and num_samples >= 1, "num_samples", "an integer >= 1", num_samples)
    require(isinstance(num_classes, int) and num_classes >= 2, "num_classes", "an integer >= 2", num_classes)
    require(isinstance(epochs, int) and epochs >= 1, "epochs", "an integer >= 1", epochs)
    require(isinstance(seed, int) and 0 <= seed < 2**63, "seed", "an integer in [0, 2^63)", seed)
    cfg = method_config(name, epochs, hparams)
    needs = METHODS[cfg.name].requires(cfg)
    for what, given in (("model", model), ("dataset", dataset)):
        if what in needs and given is None:
            raise ConfigError(f"method={name} needs {NEEDED[what]}")
    if dataset is not None:
        if not isinstance(dataset, IndexedDataset):
            raise ConfigError(f"dataset= is a {type(dataset).__name__}: allowed an lstsd.IndexedDataset (wrap the "
                              "training set: lstsd.IndexedDataset(train_set))")
        if len(dataset) != num_samples:
            raise ConfigError(f"dataset= holds {len(dataset)} samples, num_samples={num_samples}: allowed the "
                              "training set the sample ids index")
    if device is None:
        device = next((p.device for p in model.parameters()), "cpu") if model is not None else "cpu"
    first = dataset.get(torch.arange(1)).x if dataset is not None else None  # the global generator left alone
    shape = tuple(first.shape[1:]) if isinstance(first, torch.Tensor) else ()
    info = DataInfo(name="dataset", num_classes=num_classes, input_shape=shape, num_train=num_samples, num_val=0,
                    num_test=0)
    device = torch.device(device)
    probe = first.to(device) if isinstance(first, torch.Tensor) else None
    resolved = resolve(cfg, Student(info, device, probe, seed=seed), teacher)  # the run's path, without training
    ctx = RunContext(model=model, info=info, device=device, epochs=epochs, train=dataset, seed=seed, teacher=resolved)
    return build_method(cfg, ctx)


def method_config(name: str, epochs: int, hparams: dict) -> Any:
    """The validated schema of ``lstsd method=<name> trainer.epochs=<epochs>`` with ``hparams`` over it."""
    require(isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", name) is not None, "method",
            "the name of a method (letters, digits, _ . -)", name)
    cfg = compose_run([f"trainer.epochs={epochs}", f"method={name}"], name)
    types = {f.name: f.type for f in dataclasses.fields(OmegaConf.get_type(cfg.method))}
    for key, value in hparams.items():
        if key not in types:
            raise unknown_key(f"method.{key}", types)
        try:
            cfg.method[key] = value
        except OmegaConfBaseException:  # a value of another type (OmegaConf converts what it can: 1 -> 1.0)
            raise ConfigError(f"method.{key}={value!r} is invalid: allowed a value of type {types[key]}") from None
    return validate(cfg).method


def compose_run(overrides: list[str], name: str) -> DictConfig:
    """The run configuration of ``overrides`` (:func:`lstsd.config.compose.compose`); a method registered without
    a YAML option gets its schema as it is."""
    from hydra.errors import HydraException, MissingConfigException

    try:
        return compose.compose(overrides)
    except MissingConfigException as e:
        if name not in METHODS:
            raise ConfigError(one_line(e)) from None
        cfg = compose.compose(overrides[:-1])
        node = OmegaConf.structured(METHODS.get(name).schema)
        node.name = name
        cfg.method = node
        return cfg
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(one_line(e)) from None
