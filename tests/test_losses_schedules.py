"""The KD term and the learning-rate schedules against values computed by hand."""
import math

import pytest
import torch
from types import SimpleNamespace

from lstsd.methods.losses import kd_loss, teacher_probs
from lstsd.training.schedules import build_schedule

S = torch.tensor([[1.0, 2.0, 0.0]])
T_ = torch.tensor([[0.0, 1.0, 3.0]])


def softmax(v, t):
    e = [math.exp(x / t) for x in v]
    return [x / sum(e) for x in e]


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


# By hand (T = 1): log-sum-exp of the teacher [0,1,3] is 3.16990, of the student [1,2,0] 2.40760, so
# log p_t - log p_s = (t - s) - 0.76230 = [-1.76230, -1.76230, 2.23770]; with p_t = [0.042010, 0.114195,
# 0.843795] and p_s = [0.244728, 0.665241, 0.090031]: KL(p_t||p_s) = 1.61288, KL(p_s||p_t) = 1.40218.
@pytest.mark.parametrize("direction,expected", [("forward", 1.61288), ("reverse", 1.40218)])
def test_kd_literal_values_t1(direction, expected):
    assert kd_loss(S, T_, 1.0, direction).item() == pytest.approx(expected, abs=1e-4)  # 5-digit hand arithmetic


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("t2", [True, False])
def test_kd_matches_formula(direction, temperature, t2):
    p_s, p_t = softmax(S[0].tolist(), temperature), softmax(T_[0].tolist(), temperature)
    ref = kl(p_t, p_s) if direction == "forward" else kl(p_s, p_t)
    ref *= temperature**2 if t2 else 1.0
    assert kd_loss(S, T_, temperature, direction, t2).item() == pytest.approx(ref, rel=1e-5)
    # the same teacher given as its tempered distribution
    probs = teacher_probs(T_, temperature)
    assert kd_loss(S, probs, temperature, direction, t2, teacher_is_probs=True).item() == pytest.approx(ref, rel=1e-5)


def test_kd_is_batch_mean_not_element_mean():
    both = kd_loss(torch.cat([S, T_]), torch.cat([T_, S]), 2.0)
    one = (kd_loss(S, T_, 2.0) + kd_loss(T_, S, 2.0)) / 2
    assert both.item() == pytest.approx(one.item(), rel=1e-6)


def test_kd_untempered_student():
    ref = kl(softmax(T_[0].tolist(), 2.0), softmax(S[0].tolist(), 1.0))
    assert kd_loss(S, T_, 2.0, t2_scale=False, student_temperature=1.0).item() == pytest.approx(ref, rel=1e-5)


def test_kd_gradient_is_ps_minus_pt_over_T():
    s = S.clone().requires_grad_(True)
    kd_loss(s, T_, 2.0, "forward", t2_scale=True).backward()
    expected = 2.0 * (torch.softmax(S / 2, -1) - torch.softmax(T_ / 2, -1))  # T^2 * (p_s - p_t) / T
    assert torch.allclose(s.grad, expected, atol=1e-6)


def lrs(name, total, cycles=None, steps_per_epoch=1, **kw):
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    cfg = SimpleNamespace(name=name, milestones=kw.get("milestones", [0.25, 0.5, 0.75]), gamma=0.1,
                          lr_min=kw.get("lr_min", 0.0), warmup_epochs=kw.get("warmup_epochs"))
    sched, out = build_schedule(cfg, opt, steps_per_epoch, total // steps_per_epoch, cycles), []
    for t in range(total):
        sched.step_update(t)
        out.append(opt.param_groups[0]["lr"])
    return out


def test_step_schedule_divides_by_10_at_25_50_75_percent():
    out = lrs("step", 164 * 10)  # 164 epochs of 10 steps: boundaries at epochs 41, 82, 123
    for t, lr in [(0, 0.1), (409, 0.1), (410, 0.01), (819, 0.01), (820, 0.001), (1229, 0.001), (1230, 1e-4),
                  (1639, 1e-4)]:
        assert out[t] == pytest.approx(lr), t


def test_cosine_schedule_by_hand_with_and_without_lr_min():
    out = lrs("cosine", 8)
    assert out == pytest.approx([0.05 * (1 + math.cos(math.pi * t / 8)) for t in range(8)])
    out = lrs("cosine", 8, lr_min=0.01)
    assert out == pytest.approx([0.01 + 0.045 * (1 + math.cos(math.pi * t / 8)) for t in range(8)])


def test_cosine_restarted_per_minigeneration_equal_cycles():
    # SE / SD Eq. 5: 3 mini-generations of 2 epochs x 2 steps; restarts at 0.1 at t = 4 and 8
    out = lrs("cosine", 12, cycles=[2, 2, 2], steps_per_epoch=2)
    assert out == pytest.approx([0.05 * (1 + math.cos(math.pi * (t % 4) / 4)) for t in range(12)])
    assert out[3] == pytest.approx(0.05 * (1 + math.cos(3 * math.pi / 4)))  # last update of cycle 1
    assert out[4] == pytest.approx(0.1)
    assert out[8] == pytest.approx(0.1)  # first update of cycles 2 and 3
    assert out[5] == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))


def test_restarts_with_unequal_cycles_and_step_schedule():
    # cycles of 1, 3 epochs (x 10 steps): cosine over 10 then over 30 updates
    out = lrs("cosine", 40, cycles=[1, 3], steps_per_epoch=10)
    assert out[:10] == pytest.approx([0.05 * (1 + math.cos(math.pi * t / 10)) for t in range(10)])
    assert out[10:] == pytest.approx([0.05 * (1 + math.cos(math.pi * t / 30)) for t in range(30)])
    assert out[9] == pytest.approx(0.05 * (1 + math.cos(0.9 * math.pi)))
    assert out[10] == pytest.approx(0.1)
    # a step schedule restarted per cycle: milestones are fractions of each cycle
    out = lrs("step", 24, cycles=[2, 4], steps_per_epoch=4, milestones=[0.5])
    assert out == pytest.approx([0.1] * 4 + [0.01] * 4 + [0.1] * 8 + [0.01] * 8)


def test_constant_schedule():
    assert lrs("constant", 5) == pytest.approx([0.1] * 5)


@pytest.mark.parametrize("name", ["constant", "step", "cosine"])
@pytest.mark.parametrize("steps,lr_min,cycles", [(7, 0.0, None), (40, 0.01, None), (123, 0.0, [2, 1]),
                                                 (40, 0.01, [1, 1, 1, 1])])
def test_schedules_equal_timms_step_by_step(name, steps, lr_min, cycles):
    """The closed forms give the rates timm's schedulers gave (MultiStepLRScheduler with its milestones shifted by
    one update, CosineLRScheduler), for every update of every cycle, bit for bit."""
    timm = pytest.importorskip("timm.scheduler")
    from types import SimpleNamespace

    from lstsd.training.schedules import build_schedule

    cfg = SimpleNamespace(name=name, milestones=[0.25, 0.5, 0.75], gamma=0.1, lr_min=lr_min, warmup_epochs=None)
    epochs = sum(cycles) if cycles else 3
    lengths = [e * steps for e in (cycles or [epochs])]
    ours = build_schedule(cfg, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), steps, epochs, cycles)
    t = 0
    for n in lengths:
        theirs = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        if name == "step":
            ref = timm.MultiStepLRScheduler(theirs, decay_t=[round(m * n) + 1 for m in cfg.milestones],
                                            decay_rate=0.1, t_in_epochs=False)
        elif name == "cosine":
            ref = timm.CosineLRScheduler(theirs, t_initial=n, lr_min=lr_min, t_in_epochs=False)
        for k in range(n):
            assert ours.rates(t)[0] == (0.1 if name == "constant" else ref._get_lr(k)[0]), (t, k)
            t += 1


def test_warmup_ramps_the_first_epochs_linearly_then_follows_the_schedule():
    """schedule.warmup_epochs=2 over 4 updates an epoch: updates 0..7 get lr(t) * (t + 1) / 8, then the schedule
    (cosine over the run's 40 updates) as without warm-up; restarts do not warm up again."""
    plain, warm = lrs("cosine", 40, steps_per_epoch=4), lrs("cosine", 40, steps_per_epoch=4, warmup_epochs=2)
    assert warm[:8] == pytest.approx([plain[t] * (t + 1) / 8 for t in range(8)])
    assert warm[8:] == plain[8:]
    restarted = lrs("cosine", 40, cycles=[5, 5], steps_per_epoch=4, warmup_epochs=1)
    assert restarted[20:] == lrs("cosine", 40, cycles=[5, 5], steps_per_epoch=4)[20:]
