"""Self-Distillation from Last Mini-Batch (DLB; Shen et al., CVPR 2022).

Each step t forwards the new mini-batch B_t and, again, the samples of the previous step's new mini-batch
B_{t-1}, re-read from the training set with a fresh augmentation. Cross-entropy is averaged over both halves
(2n samples); on the repeated half the logits z_prev that B_{t-1} received in step t-1 (train mode, before that
step's update, detached) are the soft targets:

    L = CE([f(B_t), f(B_{t-1})], y) + alpha * T^2 * KL( softmax(z_prev / T) || softmax(f(B_{t-1}) / T) )

``forward=separate`` (the default) runs the two halves as two forward passes, B_t first, as the official code
does (``model.forward(imgs[:, 0])``, then ``model.forward(pre_images[:, 1])``), so each half is normalised by
its own batch statistics; ``forward=joint`` runs them as one pass over the concatenated batch (one set of
batch statistics, one forward: faster on a GPU).

(the KL averaged over the repeated half; T = 3, alpha = 1). Only the last batch's indices and logits are kept,
not a per-sample bank. The first step of training has no repeated half; the previous batch carries across an
epoch boundary (the first step of an epoch repeats the last, possibly partial, batch of the one before), so
every sample is trained on once as new and once, in the step after, as repeated. The repeated half's
augmentation is drawn from a generator of its own seeded by (seed, epoch), and the last batch is part of the
checkpoint, so a resumed run repeats the same samples with the same augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lstsd.config import MethodConfig
from lstsd.data.loaders.memory import epoch_generator
from lstsd.errors import require, require_choice
from lstsd.methods.losses import kd_loss
from lstsd.methods.base import Method
from lstsd.registry import register_method

REPEAT_STREAM = 1  # epoch_generator stream of the repeated half's augmentation


@dataclass
class DLBConfig(MethodConfig):
    alpha: float = 1.0
    temperature: float = 3.0
    forward: str = "separate"  # separate: two passes, B_t then B_{t-1} (the official code); joint: one pass

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice("method.forward", self.forward, ("separate", "joint"))
        require(self.alpha >= 0, "method.alpha", "a number >= 0", self.alpha)
        require(self.temperature > 0, "method.temperature", "a number > 0", self.temperature)


@register_method("dlb", DLBConfig)
class DLB(Method):
    """DLB's loss (the official training step): CE over both halves + alpha T^2 KL on the repeated half."""
    images_per_step = 2  # each step trains on its new batch and the previous one's repeat

    @classmethod
    def requires(cls, cfg: DLBConfig) -> frozenset[str]:
        """The network (the repeated half's forward pass) and the dataset (the previous samples are re-read);
        ``forward=joint``, one pass over both halves, is the trainer's own forward."""
        require(cfg.forward == "separate", "method.forward",
                "separate in a loop of one's own (joint forwards both halves in one pass: only the lstsd trainer "
                "does)", cfg.forward)
        return frozenset({"model", "dataset"})

    def __init__(self, cfg: DLBConfig, ctx):
        super().__init__(cfg, ctx)
        self.last: Optional[tuple[Tensor, Tensor]] = None  # (indices, logits) of the previous step's new half
        self.generator: Optional[torch.Generator] = None

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        # each process its own repeated-half augmentation
        self.generator = epoch_generator(self.ctx.seed, epoch, REPEAT_STREAM + 1000 * self.ctx.train.rank)

    def training_step(self, batch) -> tuple[Tensor, Tensor, dict]:
        if self.cfg.forward == "separate" or self.last is None:
            return super().training_step(batch)  # B_t first, then (in the loss) B_{t-1}, as the official code
        index, z_prev = self.last
        rep = self.ctx.train.get(index, self.generator)
        n = len(batch.y)
        out = self.net(torch.cat([batch.x, rep.x]))
        loss, terms = self.halves_loss(batch, out[:n], rep, out[n:], z_prev)
        return loss, out[:n], terms

    def loss(self, batch, logits: Tensor) -> tuple[Tensor, dict]:
        """The step's loss given the new half's logits: the repeated half B_{t-1} is re-read and forwarded here
        (a second pass, through the plain module: DDP is prepared once per step, by the first; the gradients of
        both passes accumulate on the parameters before it reduces them)."""
        if self.last is None:  # the first step of training: no repeated half
            ce = F.cross_entropy(logits, batch.y)
            return ce, {"ce": ce}
        index, z_prev = self.last
        rep = self.ctx.train.get(index, self.generator)
        return self.halves_loss(batch, logits, rep, self.model(rep.x), z_prev)

    def halves_loss(self, batch, logits: Tensor, rep, logits_rep: Tensor, z_prev: Tensor) -> tuple[Tensor, dict]:
        ce = F.cross_entropy(torch.cat([logits, logits_rep]), torch.cat([batch.y, rep.y]))
        kd = kd_loss(logits_rep, z_prev, self.cfg.temperature)
        return ce + self.cfg.alpha * kd, {"ce": ce, "kd": kd}

    @torch.no_grad()
    def after_step(self, batch, logits: Tensor) -> None:
        self.last = (batch.index, logits.detach())

    def rank_state(self) -> dict:
        """Each process's own: its previous batch and its repeated halves' generator."""
        last = None if self.last is None else tuple(t.cpu() for t in self.last)
        return {"last": last, "generator": None if self.generator is None else self.generator.get_state()}

    def load_rank_state(self, state: dict) -> None:
        last = state.get("last")  # {}: a rank that did not exist when the checkpoint was taken
        self.last = None if last is None else tuple(t.to(self.ctx.device) for t in last)
        if state.get("generator") is not None and self.generator is not None:  # inside an epoch: go on with it
            self.generator.set_state(state["generator"])
