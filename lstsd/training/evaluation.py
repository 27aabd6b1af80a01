"""Evaluation of a model on a split: the loss and the metrics in %."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(model, loader, autocast=contextlib.nullcontext, metrics=("acc",)) -> dict:
    """Mean cross-entropy (``loss``) and ``metrics`` in % of ``model`` over ``loader`` (forward passes under
    ``autocast``, the training precision; the loss in float32). ``acc`` and ``top5`` (the label among the five
    highest logits) are counted on the device; ``f1`` (of class 1) and ``mcc`` (Matthews correlation) are
    scikit-learn's, from the predictions read back once."""
    was_training = model.training
    model.eval()
    top5, labelled = "top5" in metrics, bool({"f1", "mcc"} & set(metrics))
    loss, correct, correct5, preds = torch.zeros(()), torch.zeros((), dtype=torch.long), torch.zeros(()), []
    for batch in loader.epoch(0):
        with autocast():
            logits = model(batch.x).float()
        loss += F.cross_entropy(logits, batch.y, reduction="sum").float().cpu()
        correct += (logits.argmax(1) == batch.y).sum().cpu()
        if top5:
            correct5 += (logits.topk(min(5, logits.shape[1]), 1).indices == batch.y[:, None]).any(1).sum().cpu()
        if labelled:
            preds.append(logits.argmax(1))
    model.train(was_training)
    n = loader.num_samples
    out = {"loss": loss.item() / n, "acc": 100.0 * correct.item() / n}
    if top5:
        out["top5"] = 100.0 * correct5.item() / n
    if labelled:
        from sklearn.metrics import f1_score, matthews_corrcoef

        y, p = loader.y.cpu().numpy(), torch.cat(preds).cpu().numpy()  # evaluation loaders keep their order
        scores = {"f1": lambda: f1_score(y, p, zero_division=0.0), "mcc": lambda: matthews_corrcoef(y, p)}
        out |= {m: 100.0 * float(scores[m]()) for m in metrics if m in scores}
    return out
