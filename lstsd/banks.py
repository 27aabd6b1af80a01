"""The per-sample bank: one row of teacher outputs per training sample, addressed by the sample id.

Rows live on the training device in a configurable dtype (float16/bfloat16 halve float32's memory) and are
read and written with vectorised index operations, so a bank costs one gather and one scatter per step.
"""
from __future__ import annotations

import torch
from torch import Tensor

BANK_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class SampleBank:
    """An ``N x C`` table; ``filled`` marks the rows written at least once."""

    def __init__(self, num_samples: int, num_classes: int, dtype: str = "float32", device="cpu"):
        self.values = torch.zeros(num_samples, num_classes, dtype=BANK_DTYPES[dtype], device=device)
        self.filled = torch.zeros(num_samples, dtype=torch.bool, device=device)

    def write(self, index: Tensor, rows: Tensor) -> None:
        self.values[index] = rows.detach().to(self.values.dtype)
        self.filled[index] = True

    def read(self, index: Tensor) -> Tensor:
        """The rows of ``index`` in float32 (the loss is always computed in float32)."""
        return self.values[index].float()

    @property
    def nbytes(self) -> int:
        return self.values.numel() * self.values.element_size()

    def state_dict(self) -> dict:
        return {"values": self.values, "filled": self.filled}

    def load_state_dict(self, state: dict) -> None:
        if state["values"].shape != self.values.shape:
            raise ValueError(f"bank shape {tuple(state['values'].shape)} != {tuple(self.values.shape)}")
        self.values.copy_(state["values"])
        self.filled.copy_(state["filled"])
