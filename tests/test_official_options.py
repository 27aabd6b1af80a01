"""The options that follow the baselines' official code, pinned against the official loops transcribed onto the
same tensors: DLB's two forward passes, Mean Teacher's train-mode teacher on its own augmentation with a
parameters-only average, LSTSD (single)'s snapshot mode; and the precomputed outputs of a frozen teacher."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import compose_cfg
from lstsd.config import validate
from lstsd.data.types import Batch, DataInfo
from lstsd.methods import build_method
from lstsd.methods.base import RunContext
from lstsd.methods.teacher import TeacherOutputs, mode_invariant

INFO = DataInfo("toy", num_classes=2, input_shape=(3,), num_train=6, num_val=0, num_test=0)
X = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3], [-0.7, 0.9, 0.1], [0.0, 1.0, -2.0], [2.0, 0.5, 0.5],
                  [-1.0, -0.5, 1.0]])
Y = torch.tensor([0, 1, 1, 0, 1, 0])


class Train:
    """A training set of 6 samples; ``get`` with a generator adds that generator's noise (an augmentation)."""
    augment, rank, num_samples = True, 0, 6

    def get(self, index, generator):
        x = X[index]
        if generator is not None:
            x = x + 0.1 * torch.randn(x.shape, generator=generator)
        return Batch(x, Y[index], index)


def bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def method(*overrides, model):
    cfg = validate(compose_cfg(*overrides, "trainer.epochs=2")).method
    return build_method(cfg, RunContext(model=model, info=INFO, device=torch.device("cpu"), epochs=2,
                                              steps_per_epoch=1, train=Train(), seed=0))


def test_dlb_separate_forwards_equal_the_official_step():
    """The official step (dlb.py): out = model(imgs[:, 0]); out_pre = model(pre_images[:, 1]); CE over
    cat(out_pre, out); T^2 batch-mean KL on the repeated half; both passes update the batch-norm statistics."""
    ours, official = bn_model(), bn_model()
    dlb = method("method=dlb", model=ours)
    dlb.on_epoch_start(0)
    z_prev = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    dlb.last = (torch.tensor([0, 1]), z_prev)
    new = Batch(X[2:5], Y[2:5], torch.tensor([2, 3, 4]))
    loss, _, terms = dlb.training_step(new)
    loss.backward()

    from lstsd.data.loaders.memory import epoch_generator
    from lstsd.methods.dlb import REPEAT_STREAM

    rep = Train().get(torch.tensor([0, 1]), epoch_generator(0, 0, REPEAT_STREAM))  # the same draw as DLB's
    out = official(new.x)
    out_pre = official(rep.x)
    ce = F.cross_entropy(torch.cat((out_pre, out)), torch.cat((rep.y, new.y)))
    dml = F.kl_div(F.log_softmax(out_pre / 3, dim=1), F.softmax(z_prev / 3, dim=1), reduction="batchmean") * 9
    (ce + dml).backward()
    assert loss.item() == pytest.approx((ce + dml).item(), rel=1e-6)
    assert (terms["ce"].item() == pytest.approx(
        ce.item(), rel=1e-6))
    for (name, a), b in zip(ours.named_parameters(), official.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    for (name, a), b in zip(ours.named_buffers(), official.buffers()):
        assert torch.equal(a, b), name  # running statistics of both passes, in the official order

    joint = method("method=dlb", "method.forward=joint", model=bn_model())
    joint.on_epoch_start(0)
    joint.last = (torch.tensor([0, 1]), z_prev)
    assert joint.training_step(new)[0].item() != pytest.approx(loss.item(), rel=1e-6)  # one set of statistics


def test_mean_teacher_official_teacher_train_mode_own_augmentation_parameters_only():
    """The MT code (main.py, losses.py; mean_teacher_code): ema_model.train(); ema_model(ema_input) on its own
    augmentation; the softmax-MSE consistency of weight 100; after the student's step update_ema_variables: alpha = min(1 - 1/(global_step + 1), ema_decay) on the parameters only,
    the teacher's batch-norm statistics coming from its own train-mode passes."""
    student = bn_model()
    mt = method("method=mean_teacher_code", "method.decay=0.9", "method.rampup_epochs=0", model=student)
    official_student, ema = copy.deepcopy(student), copy.deepcopy(student)
    opt_a = torch.optim.SGD(student.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(official_student.parameters(), lr=0.1)
    mt.on_epoch_start(0)
    from lstsd.data.loaders.memory import epoch_generator
    from lstsd.methods.consistency import TEACHER_STREAM

    g = epoch_generator(0, 0, TEACHER_STREAM)
    for step, index in enumerate([torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])], start=1):
        batch = Batch(X[index], Y[index], index)
        logits = student(batch.x)
        loss, terms = mt.loss(batch, logits)
        opt_a.zero_grad(), loss.backward(), opt_a.step()
        mt.after_step(batch, logits)

        ema.train()
        ema_out = ema(Train().get(index, g).x).detach()  # its own augmentation, in train mode
        out = official_student(batch.x)
        # losses.softmax_mse_loss (summed, / num_classes), then / minibatch_size in main.py; weight 100, no ramp-up
        cons = F.mse_loss(F.softmax(out, 1), F.softmax(ema_out, 1), reduction="sum") / out.shape[1] / len(index)
        official_loss = F.cross_entropy(out, batch.y) + 100.0 * cons
        opt_b.zero_grad(), official_loss.backward(), opt_b.step()
        alpha = min(1 - 1 / (step + 1), 0.9)
        with torch.no_grad():
            for e, p in zip(ema.parameters(), official_student.parameters()):
                e.mul_(alpha).add_(p, alpha=1 - alpha)
        assert loss.item() == pytest.approx(official_loss.item(), rel=1e-5), step
    for (name, a), b in zip(mt.teacher.state_dict().items(), ema.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name  # parameters and the teacher's own statistics

    eval_mt = method("method=mean_teacher", "method.teacher_mode=eval", "method.teacher_input=student",
                     "method.average=all", model=bn_model())
    eval_mt.on_epoch_start(0)
    batch = Batch(X[:3], Y[:3], torch.tensor([0, 1, 2]))
    with torch.no_grad():
        assert torch.equal(eval_mt.target(batch)[0], eval_mt.teacher.eval()(X[:3]))


def test_single_snapshots_run_in_train_mode_by_default_and_stay_unchanged():
    model = bn_model()
    single = method("method=lstsd_single", "method.minigen_epochs=1", model=model)
    assert single.cfg.snapshot_mode == "train"
    single.on_epoch_start(0), single.on_epoch_end(0), single.on_epoch_start(1)
    snap = single.snapshots["short"]
    before = {k: v.clone() for k, v in snap.state_dict().items()}
    batch = Batch(X[:4], Y[:4], torch.arange(4))
    reference = copy.deepcopy(model).train()
    with torch.no_grad():
        assert torch.allclose(single.teacher("short", batch), reference(X[:4]), atol=1e-6)  # batch statistics
    assert all(torch.equal(v, before[k]) for k, v in snap.state_dict().items() if "num_batches" not in k)
    fixed = method("method=lstsd_single", "method.minigen_epochs=1", "method.snapshot_mode=eval", model=bn_model())
    fixed.on_epoch_start(0), fixed.on_epoch_end(0), fixed.on_epoch_start(1)
    with torch.no_grad():
        assert torch.equal(fixed.teacher("short", batch), fixed.snapshots["short"].eval()(X[:4]))


def test_a_frozen_teachers_outputs_are_precomputed_without_augmentation(tiny_cfg, tmp_path):
    """Inputs that do not change between epochs (synthetic float data: no augmentation): the teacher's outputs on
    the training set are computed once and read by index, equal to running it on each batch; with augmentation
    (8-bit pixels with crop and flip) it runs on each batch."""
    from lstsd.training.run import assemble

    conf = validate(tiny_cfg("method=sd", "method.minigens=2"))
    trainer = assemble(conf, tmp_path, [])
    sd, loader = trainer.method, trainer.data.train
    sd.snapshots.append(copy.deepcopy(trainer.model).eval())
    sd.teacher_outputs.set(sd.snapshots[-1])
    assert sd.teacher_outputs.bank is not None
    assert sd.teacher_outputs.bank.shape == (40, 4)
    for batch in loader.epoch(1):
        with torch.no_grad():
            assert torch.allclose(sd.teacher_outputs(batch), sd.snapshots[-1](batch.x), atol=1e-5)
    augmented = validate(tiny_cfg("method=sd", "method.minigens=2", "dataset.pixels=uint8", "dataset.augment=true"))
    t2 = assemble(augmented, tmp_path / "b", [])
    outputs = TeacherOutputs(t2.method.ctx, copy.deepcopy(t2.model).eval())
    assert outputs.bank is None  # augmented inputs: the teacher runs on each batch


def test_mode_invariance_is_detected_structurally_and_by_probing():
    x = torch.randn(8, 3)
    assert mode_invariant(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), x)
    assert not mode_invariant(bn_model(), x)
    assert not mode_invariant(nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.2)), x)

    class FunctionalDropout(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 2)

        def forward(self, x):
            return F.dropout(self.linear(x), 0.5, self.training)

    model = FunctionalDropout()
    state = torch.get_rng_state()
    assert not mode_invariant(model, x)
    assert torch.equal(torch.get_rng_state(), state)  # generators untouched
