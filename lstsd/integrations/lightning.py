"""A method on a LightningModule: the :class:`Distillation` callback (the lightning extra:
``pip install -e '.[lightning]'``).

The callback builds the method when fitting starts (:func:`lstsd.method`, on the module's device, for the
trainer's ``max_epochs``) and calls its hooks at Lightning's: ``on_epoch_start`` at each training epoch's start,
``after_optimizer_step`` after each training batch (after the optimiser step), ``on_epoch_end`` at the epoch's
end. The module's ``training_step`` returns the method's loss, from batches of ``(input, target, index)``
(:class:`lstsd.IndexedDataset`)::

    distillation = Distillation("lstsd", num_samples=len(train_set), num_classes=10, lambda_long=2.4)

    class Classifier(L.LightningModule):
        def training_step(self, batch, batch_idx):
            x, y, index = batch
            return distillation.method.compute_loss(self.net(x), y, index, inputs=x)

    L.Trainer(max_epochs=200, callbacks=[distillation]).fit(Classifier(), DataLoader(train_set, ...))

The method's extra models (EMA teacher, snapshot ensembles) are evaluated on every validation batch
(``<name>_val_loss``, ``<name>_val_acc``, batches ``(input, target, ...)``), and its state (``state_dict`` and
``rank_state``) travels in Lightning's checkpoints.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from lstsd.data.indexed import IndexedDataset
from lstsd.errors import ConfigError, import_extra

try:
    pl = import_extra("lightning.pytorch", "lstsd.integrations.lightning")
except ConfigError as e:  # an import: the error an import raises
    raise ImportError(str(e)) from None
from lstsd.library import method as build
from lstsd.methods.base import Method


class Distillation(pl.Callback):
    """The method ``name`` (any ``method=`` option) with ``hparams`` over its settings, for a training set of
    ``num_samples`` samples and ``num_classes`` classes, applied to the LightningModule being fitted.

    ``model``: the network trained, where the method needs it (snapshots, EMA teachers: SD, Mean Teacher, ...);
    ``dataset``: the training set, where the method re-reads samples (DLB); ``seed``: the method's own random
    draws. The method, :attr:`method`, is built at the start of ``Trainer.fit``. Gradient accumulation is
    refused (the method's step is one optimiser step per batch)."""

    def __init__(self, name: str, *, num_samples: int, num_classes: int, model: Optional[nn.Module] = None,
                 dataset: Optional[IndexedDataset] = None, seed: int = 0, **hparams: Any):
        self.name, self.model, self.dataset, self.seed, self.hparams = name, model, dataset, seed, hparams
        self.num_samples, self.num_classes = num_samples, num_classes
        self.built: Optional[Method] = None
        self.restored: Optional[dict] = None  # a checkpoint's state, loaded before the method is built
        self.evaluating: dict[str, nn.Module] = {}

    @property
    def method(self) -> Method:
        """The method, built when ``Trainer.fit`` starts."""
        if self.built is None:
            raise RuntimeError(f"Distillation({self.name!r}).method is built when Trainer.fit starts: use it from "
                               "the module's training_step")
        return self.built

    @property
    def state_key(self) -> str:
        return self._generate_state_key(method=self.name)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.accumulate_grad_batches != 1:
            raise ConfigError(f"accumulate_grad_batches={trainer.accumulate_grad_batches} is invalid: allowed 1 "
                              "(the method updates its banks and teachers after each optimiser step)")
        epochs = trainer.fit_loop.max_epochs
        if epochs is None or epochs < 1:
            raise ConfigError(f"max_epochs={epochs} is invalid: allowed a number of epochs >= 1 (the method's "
                              "schedule, its mini-generations and ramp-ups, is in epochs)")
        # a checkpoint's state, or the state of an earlier fit with this callback (a fit continued)
        carried = self.restored if self.restored is not None or self.built is None else self.state_dict()
        self.built = build(self.name, num_samples=self.num_samples, num_classes=self.num_classes, epochs=epochs,
                           model=self.model, dataset=self.dataset, device=pl_module.device, seed=self.seed,
                           **self.hparams)
        self.restored = None
        if carried:
            self.load_state_dict(carried)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.method.on_epoch_start(trainer.current_epoch)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.method.after_optimizer_step()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.method.on_epoch_end(self.method.epoch)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluating = self.method.evaluators()

    @torch.no_grad()
    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch[0], batch[1]
        for name, model in self.evaluating.items():
            training = model.training
            logits = model.eval()(x).float()
            model.train(training)
            pl_module.log(f"{name}_val_loss", F.cross_entropy(logits, y), batch_size=len(y))
            pl_module.log(f"{name}_val_acc", 100.0 * (logits.argmax(1) == y).float().mean(), batch_size=len(y))

    def state_dict(self) -> dict:
        if self.built is None:
            return {} if self.restored is None else self.restored
        return {"method": self.built.state_dict(), "rank": self.built.rank_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.built is None or not state_dict:
            self.restored = state_dict or None
            return
        self.built.load_state_dict(state_dict["method"])
        self.built.load_rank_state(state_dict["rank"])
