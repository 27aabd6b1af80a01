"""LW-KD: knowledge distillation from a lightweight teacher trained on synthetic digits (LW-KD Algorithms 1-2).

1. A LeNet-5 teacher is trained on SynMNIST-K (``dataset=synmnist`` with the target's K classes; Algorithm 2
   line 1), once per (K, seed, teacher settings): the run resolves it before it builds the method
   (:func:`lstsd.training.teachers.resolve`, from :meth:`LWKDConfig.teacher_overrides`) and hands it over with the
   SynMNIST-K training split it reads (``ctx.teacher.inputs``). ``teacher_run``, a module given to the run,
   ``teacher_checkpoint`` (for ``teacher_model``, by default the model ``teacher`` names: LeNet-5) or pretrained
   weights take its place, as for KD.
2. Each target training sample is mapped to a fixed synthetic training sample of its class (line 3: the j-th
   sample of class c, in index order, to the (j mod E_c)-th synthetic sample of class c). The teacher is fixed,
   so its logits on the mapped samples are computed once and kept in a per-sample bank (no teacher forward
   during training).
3. The soft target p_tau^t = softmax(z^t / tau) gets the shift of Eq. 3: the values at the arg-max class m and
   at the ground-truth class c are swapped.
4. The student minimises Eq. 8 with Eq. 4, (1 - alpha) CE + alpha KL(p_hat_tau^t || p_tau^s) + beta E[log(1 -
   D(p_tau^s))]. The KL term is Eq. 1's batch mean without a tau^2 factor: Eq. 4 prints none, and Section 3.2.4
   defines "the standard KD loss adopted by vanilla KD" as "a cross-entropy loss and a KL-divergence loss (shown
   in Equation 1)", whose Eq. 1 has none either; ``t2_scale=true`` multiplies it by tau^2 as Hinton et al.'s KD
   does (400 at tau = 20, 36 at tau = 6). The discriminator D, a two-layer
   MLP on probability vectors (K -> ``disc_hidden`` -> 1, ReLU), maximises Eq. 7,
   E[log D(p_hat_tau^t)] + E[log(1 - D(p_tau^s))], with its own Adam optimiser (lr 0.1, the paper's), one step
   after each student step (lines 12-13). The student's optimiser holds only the student's parameters and D's
   are frozen during the student's backward pass. Project choices (docs/methods.md): the KL's direction (Eq. 1
   defines KL(p^s, p^t), Eq. 4 calls it with the teacher first) and ``disc_hidden`` = 128 (the paper gives no
   width).

Ablations (Table 7): ``lwkd_wo_adv`` (beta = 0), ``lwkd_wo_kl`` (``use_kl=false``: the alpha KL term erased,
(1 - alpha) CE kept); ``lwkd_wo_syn`` is the configuration of Table 3's KD[T5] (``kd_lenetw``: KD from a LeNetW
trained on the target data), as Section 5.2 describes it ("just as KD[T5] in Table 3") and as its published
numbers equal KD[T5]'s on both datasets (92.46 / 68.73). ``teacher_source=target`` is the other reading, LW-KD's
own loss with that teacher (run forward on each batch in eval mode).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstsd import distributed
from lstsd.data.readers.synmnist import DIGITS, require_mnist
from lstsd.errors import ConfigError, require, require_choice
from lstsd.methods.banks import SampleBank
from lstsd.methods.base import Method
from lstsd.methods.losses import kd_loss
from lstsd.methods.teacher import TeacherConfig, student_overrides
from lstsd.registry import register_method


def shift(p: Tensor, y: Tensor) -> Tensor:
    """Eq. 3: swap each row's largest probability with the probability of its ground-truth class."""
    m = p.argmax(1, keepdim=True)
    c = y[:, None]
    p_c, p_m = p.gather(1, c), p.gather(1, m)
    return p.scatter(1, m, p_c).scatter(1, c, p_m)


@dataclass
class LWKDConfig(TeacherConfig):
    alpha: float = 0.1
    beta: float = 0.1
    temperature: float = 20.0  # tau (CIFAR-100: alpha 0.1, beta 0.1, tau 20; CIFAR-10: 0.5, 0.1, 6)
    t2_scale: bool = False  # Eq. 1 and 4 as printed; true: times tau^2 (Hinton's KD)
    use_kl: bool = True
    teacher_source: str = "synmnist"  # or "target": LeNetW trained on the target data (w/o SYN)
    # SynMNIST's digit images (dataset.digits of the teacher's data): auto (MNIST under dataset.root if there, else
    # scikit-learn's digits), mnist (the paper's; refused without the files), sklearn
    synmnist_digits: str = "auto"
    teacher: Optional[list[str]] = field(default_factory=lambda: [
        "model=lenet5", "trainer.epochs=10", "optim=sgd", "optim.lr=0.1", "optim.nesterov=false",
        "optim.weight_decay=5e-4", "schedule=constant", "dataset.batch_size=128"])  # the teacher's (LW-KD 4.3)
    disc_hidden: int = 128
    disc_lr: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.alpha <= 1.0, "method.alpha", "a number in [0, 1]", self.alpha)
        require(self.beta >= 0, "method.beta", "a number >= 0", self.beta)
        require(self.temperature > 0, "method.temperature", "a number > 0", self.temperature)
        require_choice("method.teacher_source", self.teacher_source, ("synmnist", "target"))
        require_choice("method.synmnist_digits", self.synmnist_digits, DIGITS)
        require(self.disc_hidden >= 1, "method.disc_hidden", "an integer >= 1", self.disc_hidden)
        require(self.disc_lr > 0, "method.disc_lr", "a number > 0", self.disc_lr)

    def check(self, cfg) -> None:
        """The paper's SynMNIST (``synmnist_digits=mnist``) needs MNIST's files under ``dataset.root``: refused
        before anything trains, rather than a teacher trained on other digits."""
        if self.synmnist_digits == "mnist" and self.teacher_source == "synmnist" and self.teacher_run is None:
            require_mnist(cfg.dataset.root, "method.synmnist_digits")

    def own_inputs(self) -> bool:
        """The teacher reads SynMNIST (Algorithm 2), unless it is trained on the target data (w/o SYN)."""
        return self.teacher_source == "synmnist"

    def teacher_overrides(self, student: list[str], dataset_root: str, num_classes: int, seed: int) -> list[str]:
        """LeNet-5 on SynMNIST-K (K = the target's classes, the student's seed), or, with ``teacher_source=target``,
        the student's own command line as KD's."""
        if not self.own_inputs():
            return student_overrides(student, list(self.teacher or []))
        return ["dataset=synmnist", f"dataset.num_classes={num_classes}", f"dataset.root={dataset_root}",
                f"dataset.digits={self.synmnist_digits}", f"seed={seed}", "method=vanilla", *(self.teacher or [])]


@register_method("lwkd", LWKDConfig)
class LWKD(Method):
    @classmethod
    def requires(cls, cfg: LWKDConfig) -> frozenset[str]:
        """Only the trainer runs LW-KD: its synthetic digit images and their labels come from the run's
        configuration (``dataset.root``, the seed, the teacher's run)."""
        raise ConfigError(f"method={cfg.name} is invalid in a loop of one's own: allowed only through the lstsd "
                          "trainer (LW-KD's synthetic images and teacher are built from the run's configuration)")

    def __init__(self, cfg: LWKDConfig, ctx):
        super().__init__(cfg, ctx)
        k = ctx.info.num_classes
        self.teacher, self.teacher_dir = ctx.teacher.module, ctx.teacher.run_dir
        self.teacher_record = ctx.teacher.record  # its run's results, read with its weights
        own, syn = cfg.own_inputs(), ctx.teacher.inputs
        self.bank = None
        if own:
            self.bank = self.synthetic_targets(syn)
        self.disc = nn.Sequential(nn.Linear(k, cfg.disc_hidden), nn.ReLU(), nn.Linear(cfg.disc_hidden, 1))
        self.disc.to(ctx.device).requires_grad_(False)
        self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr)
        self.pending: Optional[tuple[Tensor, Tensor]] = None

    @torch.no_grad()
    def synthetic_targets(self, syn) -> SampleBank:
        """Algorithm 2 line 3 and line 8, once: the teacher's logits on each target sample's synthetic twin
        (``syn``: the training loader of SynMNIST-K)."""
        y_syn, y = syn.y, self.ctx.train.y.to(self.ctx.device)  # the torchvision loader keeps it on the host
        mapped = torch.empty_like(y)
        for c in range(self.ctx.info.num_classes):
            targets, pool = torch.nonzero(y == c).flatten(), torch.nonzero(y_syn == c).flatten()
            if len(targets):
                mapped[targets] = pool[torch.arange(len(targets), device=y.device) % len(pool)]
        self.mapped = mapped
        bank = SampleBank(len(y), self.ctx.info.num_classes, device=self.ctx.device)
        for index in torch.arange(len(y), device=y.device).split(1024):
            bank.write(index, self.teacher(syn.get(mapped[index], None).x), everywhere=False)  # same on all
        return bank

    def teacher_logits(self, batch) -> Tensor:
        if self.bank is not None:
            return self.bank.read(batch.index)
        with torch.no_grad():
            return self.teacher(batch.x)

    def loss(self, batch, logits: Tensor) -> tuple[Tensor, dict]:
        cfg, tau = self.cfg, self.cfg.temperature
        ce = F.cross_entropy(logits, batch.y)
        p_t = shift(F.softmax(self.teacher_logits(batch).float() / tau, dim=1), batch.y)
        loss, terms = (1 - cfg.alpha) * ce, {"ce": ce}
        if cfg.use_kl:
            terms["kl"] = kd_loss(logits, p_t, tau, "forward", cfg.t2_scale, teacher_is_probs=True)
            loss = loss + cfg.alpha * terms["kl"]
        p_s = F.softmax(logits.float() / tau, dim=1)
        if cfg.beta > 0:
            terms["adv"] = F.logsigmoid(-self.disc(p_s)).mean()  # E[log(1 - D(p_s))], D frozen here
            loss = loss + cfg.beta * terms["adv"]
        self.pending = (p_t.detach(), p_s.detach())
        return loss, terms

    def after_step(self, batch, logits: Tensor) -> None:
        """Line 13: one ascent step of the discriminator on Eq. 7 (descent on its negative)."""
        if self.cfg.beta == 0 or self.pending is None:
            return
        p_t, p_s = self.pending
        with torch.enable_grad(), torch.autocast(p_t.device.type, enabled=False):  # fp32: no loss scaler here
            p_t, p_s = p_t.float(), p_s.float()
            self.disc.requires_grad_(True)
            d_loss = -(F.logsigmoid(self.disc(p_t)).mean() + F.logsigmoid(-self.disc(p_s)).mean())
            self.disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            distributed.average_gradients(self.disc.parameters())  # one discriminator on every process
            self.disc_opt.step()
            self.disc.requires_grad_(False)

    def bank_bytes(self) -> int:
        return 0 if self.bank is None else self.bank.nbytes  # the synthetic-twin logits (none for w/o SYN)

    def state_dict(self) -> dict:
        return {"disc": self.disc.state_dict(), "disc_opt": self.disc_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.disc.load_state_dict(state["disc"])
        self.disc_opt.load_state_dict(state["disc_opt"])
