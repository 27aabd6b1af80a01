"""The one knowledge-distillation term every method uses.

``kd_loss`` computes, averaged over the batch (``reduction="batchmean"``: the element-wise mean would divide
by the number of classes too),

* ``direction="forward"`` (Hinton et al. 2015, default): KL( softmax(t / T_t) || softmax(s / T_s) )
* ``direction="reverse"`` (LSTSD paper, Eq. 1 as written, KL[f || z]): KL( softmax(s / T_s) || softmax(t / T_t) )

multiplied by T_t^2 when ``t2_scale`` (keeps gradient magnitudes independent of T, Hinton et al.). The teacher is
given either as logits or, with ``teacher_is_probs``, as the already tempered distribution softmax(t / T_t).
``student_temperature`` defaults to the teacher's; Snapshot Distillation's asymmetric term sets it to 1.

``consistency_loss`` is the target term of Mean Teacher and Temporal Ensembling: this KD term (``kl``), or the
squared difference of the probability vectors averaged over batch and classes (``mse``: Laine & Aila's
1/(C|B|) sum ||p_s - p_t||^2, Tarvainen & Valpola's softmax MSE).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

KD_DIRECTIONS = ("forward", "reverse")
CONSISTENCY_LOSSES = ("kl", "mse")
_TINY = torch.finfo(torch.float32).tiny


def kd_loss(
    student_logits: Tensor,
    teacher: Tensor,
    temperature: float = 1.0,
    direction: str = "forward",
    t2_scale: bool = True,
    teacher_is_probs: bool = False,
    student_temperature: Optional[float] = None,
    student_log_probs: Optional[Tensor] = None,
) -> Tensor:
    """``student_log_probs``: log_softmax(student_logits / T_s), when the caller already has it (LSTSD's two
    terms share one)."""
    log_p_s = student_log_probs if student_log_probs is not None else \
        log_probs(student_logits, temperature if student_temperature is None else student_temperature)
    teacher = teacher.detach().float()
    if teacher_is_probs:
        log_p_t = teacher.clamp_min(_TINY).log()
    else:
        log_p_t = F.log_softmax(teacher / temperature, dim=-1)
    if direction == "forward":
        loss = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    elif direction == "reverse":
        loss = F.kl_div(log_p_t, log_p_s, reduction="batchmean", log_target=True)
    else:
        raise ValueError(f"direction must be one of {KD_DIRECTIONS}, got {direction!r}")
    return loss * temperature**2 if t2_scale else loss


def log_probs(logits: Tensor, temperature: float) -> Tensor:
    """log_softmax(logits / T) in float32."""
    return F.log_softmax(logits.float() / temperature, dim=-1)


def teacher_probs(logits: Tensor, temperature: float) -> Tensor:
    """softmax(logits / T): what a bank stores when it keeps probabilities instead of logits."""
    return F.softmax(logits.detach().float() / temperature, dim=-1)


def consistency_loss(student_logits: Tensor, teacher: Tensor, kind: str = "kl", temperature: float = 1.0,
                     teacher_is_probs: bool = False) -> Tensor:
    if kind == "kl":
        return kd_loss(student_logits, teacher, temperature, teacher_is_probs=teacher_is_probs)
    if kind != "mse":
        raise ValueError(f"kind must be one of {CONSISTENCY_LOSSES}, got {kind!r}")
    p_t = teacher.detach().float() if teacher_is_probs else teacher_probs(teacher, temperature)
    return F.mse_loss(F.softmax(student_logits.float() / temperature, dim=-1), p_t)
