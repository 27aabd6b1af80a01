"""The per-sample bank: one row of teacher outputs per training sample, addressed by the sample id.

Rows live on the training device in a configurable dtype (float16/bfloat16 halve float32's memory) and are
read and written with vectorised index operations, so a bank costs one gather and one scatter per step.

With ``topk`` = k > 0 a row of probabilities is kept as its k largest values and their class ids; reading it
back gives those k probabilities exactly (to the bank's dtype) and spreads the remaining mass uniformly over the
other C - k classes, so every row is again a distribution. ImageNet's 1,281,167 x 1,000 float32 bank is 5.1 GB;
at k = 5 with float16 values and int16 ids it is 26 MB.

A bank never holds a non-finite number: a row that is not finite as stored (NaN or inf, or beyond a float16
bank's range) is written to a scratch row N past the samples' instead, so the sample keeps its earlier row, and
``refused`` (the scratch row's ``filled`` flag) says that it happened. All on the device, three small kernels a
write and no read-back: :meth:`lstsd.methods.base.Method.compute_loss` reads the flag with its own checks.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lstsd import distributed

BANK_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def last_of_each(index: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """``index`` without repeats, each with the row of its last occurrence. An index write with repeated ids keeps
    an unspecified one of them (on CUDA it can differ between devices), so the padded duplicates of the last
    global batch are resolved here: on every rank, the same (later-rank) row."""
    unique, inverse = torch.unique(index, return_inverse=True)
    positions = torch.arange(len(index), device=index.device)
    last = torch.full((len(unique),), -1, dtype=positions.dtype, device=index.device)
    last = last.scatter_reduce(0, inverse, positions, reduce="amax")
    return unique, rows[last]


def check_index(index: Tensor) -> None:
    """Sample ids are an integer tensor: a boolean one would select rows as a mask and a float one fail deep in
    torch (the range is checked where a read-back is affordable: :meth:`lstsd.methods.base.Method.compute_loss`)."""
    if index.dtype == torch.bool or index.is_floating_point() or index.is_complex():
        raise TypeError(f"sample ids of dtype {index.dtype}: expected an integer tensor (torch.int64)")


class SampleBank:
    """An ``N x C`` table (``N x k`` values and class ids when ``topk`` = k > 0); ``filled`` marks the rows
    written at least once."""

    def __init__(self, num_samples: int, num_classes: int, dtype: str = "float32", device="cpu", topk: int = 0):
        if not 0 <= topk < num_classes:
            raise ValueError(f"topk={topk} must be in [0, {num_classes})")
        self.num_classes, self.topk = num_classes, topk
        # one row more than the samples: where a non-finite row goes instead of its sample's (see write)
        self.all_values = torch.zeros(num_samples + 1, topk or num_classes, dtype=BANK_DTYPES[dtype], device=device)
        ids = torch.int16 if num_classes <= torch.iinfo(torch.int16).max else torch.int32
        self.all_classes = torch.zeros(num_samples + 1, topk, dtype=ids, device=device) if topk else None
        self.all_filled = torch.zeros(num_samples + 1, dtype=torch.bool, device=device)
        self.values, self.filled = self.all_values[:num_samples], self.all_filled[:num_samples]
        self.classes = self.all_classes[:num_samples] if topk else None
        self.refused = self.all_filled[num_samples]  # a 0-d view: a non-finite row was refused since the reset

    def write(self, index: Tensor, rows: Tensor, everywhere: bool = True) -> None:
        """Store ``rows`` for the samples ``index``. With several processes (``everywhere``, the default) each
        rank's (index, rows) are gathered from all ranks in rank order and written on every rank, so the banks
        stay identical; a sample padded into the last global batch twice keeps its later (higher-rank) row.
        The shapes and the index's dtype are checked (no device-to-host read): ``ValueError``/``TypeError``. A row
        that is not finite as stored keeps the sample's earlier row (and ``filled``) and sets ``refused``."""
        check_index(index)
        if rows.dim() != 2 or rows.shape[1] != self.num_classes or len(rows) != len(index):
            raise ValueError(f"bank write of rows of shape {tuple(rows.shape)} for {len(index)} sample ids: expected "
                             f"({len(index)}, {self.num_classes}), a row per sample and {self.num_classes} classes")
        if everywhere and distributed.active():
            index, rows = last_of_each(distributed.gather(index), distributed.gather(rows))
        rows = rows.detach()
        if self.topk:
            top = rows.float().topk(self.topk, dim=1)
            values = top.values.to(self.values.dtype)
        else:
            values = rows.to(self.values.dtype)
        # x - x is 0 for a finite x and NaN for inf or NaN: three kernels where isfinite(...).all(1) takes five
        finite = ((values - values).sum(1) == 0).to(index.device)
        target = torch.where(finite, index, len(self.values))  # a non-finite row goes to the scratch row
        self.all_values[target] = values
        if self.topk:
            self.all_classes[target] = top.indices.to(self.classes.dtype)
        self.all_filled[target] = True

    def clear_refused(self) -> None:
        """Reset :attr:`refused` (after it was reported)."""
        self.refused.fill_(False)

    def read(self, index: Tensor) -> Tensor:
        """The rows of ``index`` in float32 (the loss is always computed in float32), full ``C`` wide."""
        check_index(index)
        values = self.values[index].float()
        if not self.topk:
            return values
        rest = (1.0 - values.sum(1, keepdim=True)).clamp_min(0.0) / (self.num_classes - self.topk)
        return rest.expand(len(values), self.num_classes).scatter(1, self.classes[index].long(), values)

    @property
    def nbytes(self) -> int:
        ids = 0 if self.classes is None else self.classes.numel() * self.classes.element_size()
        return self.values.numel() * self.values.element_size() + ids

    def state_dict(self) -> dict:
        state = {"values": self.values, "filled": self.filled}
        return state if self.classes is None else state | {"classes": self.classes}

    def load_state_dict(self, state: dict) -> None:
        if state["values"].shape != self.values.shape or ("classes" in state) != (self.classes is not None):
            raise ValueError(f"bank shape {tuple(state['values'].shape)} != {tuple(self.values.shape)}"
                             f"{'' if self.classes is None else f' (top-{self.topk})'}")
        self.values.copy_(state["values"])
        self.filled.copy_(state["filled"])
        if self.classes is not None:
            self.classes.copy_(state["classes"])
