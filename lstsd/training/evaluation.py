"""Evaluation of a model on a split: the loss and the metrics in %."""
from __future__ import annotations

import contextlib
import itertools
from typing import Optional

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(model, loader, autocast=contextlib.nullcontext, metrics=("acc",), limit: Optional[int] = None) -> dict:
    """Mean cross-entropy (``loss``) and ``metrics`` in % of ``model`` over ``loader`` (forward passes under
    ``autocast``, the training precision; the loss in float32), over its first ``limit`` batches where given.
    ``acc`` and ``top5`` (the label among the five highest logits) are counted on the device and read back once;
    ``f1`` (of class 1) and ``mcc`` (Matthews correlation) are scikit-learn's, from the predictions."""
    was_training = model.training
    model.eval()
    top5, labelled = "top5" in metrics, bool({"f1", "mcc"} & set(metrics))
    sums, n, preds = [], 0, []  # per batch: (loss, correct, correct among the top 5) on the device
    for batch in itertools.islice(loader.epoch(0), limit):
        with autocast():
            logits = model(batch.x).float()
        hit5 = (logits.topk(min(5, logits.shape[1]), 1).indices == batch.y[:, None]).any(1).sum() if top5 else \
            logits.new_zeros(())
        sums.append(torch.stack([F.cross_entropy(logits, batch.y, reduction="sum"),
                                 (logits.argmax(1) == batch.y).sum().float(), hit5.float()]))
        n += len(batch.y)
        if labelled:
            preds.append(logits.argmax(1))
    model.train(was_training)
    loss, correct, correct5 = torch.stack(sums).sum(0).tolist()  # the one read-back
    out = {"loss": loss / n, "acc": 100.0 * correct / n}
    if top5:
        out["top5"] = 100.0 * correct5 / n
    if labelled:
        from sklearn.metrics import f1_score, matthews_corrcoef

        y, p = loader.y[:n].cpu().numpy(), torch.cat(preds).cpu().numpy()  # evaluation loaders keep their order
        scores = {"f1": lambda: f1_score(y, p, zero_division=0.0), "mcc": lambda: matthews_corrcoef(y, p)}
        out |= {m: 100.0 * float(scores[m]()) for m in metrics if m in scores}
    return out
