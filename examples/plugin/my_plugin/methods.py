"""``method=confidence_penalty``: a method of one's own (its YAML: ``conf/method/confidence_penalty.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lstsd.config import MethodConfig
from lstsd.errors import require
from lstsd.methods.base import Method
from lstsd.registry import register_method


@dataclass
class ConfidencePenaltyConfig(MethodConfig):
    beta: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.beta >= 0, "method.beta", "a number >= 0", self.beta)


@register_method("confidence_penalty", ConfidencePenaltyConfig)
class ConfidencePenalty(Method):
    """Pereyra et al. 2017, Eq. 2: CE(f(x), y) - beta H(softmax(f(x))), penalising confident predictions."""

    def loss(self, batch, logits: torch.Tensor):
        ce = F.cross_entropy(logits, batch.y)
        log_p = F.log_softmax(logits.float(), dim=1)
        entropy = -(log_p.exp() * log_p).sum(1).mean()
        return ce - self.cfg.beta * entropy, {"ce": ce, "entropy": entropy}
