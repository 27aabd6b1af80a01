"""Snapshot Distillation, Snapshot Ensembles, Mean Teacher and Temporal Ensembling pinned against hand-computed
values (SD Eq. 3 and 5, SE's ensemble, the EMA of MT, TE's bias-corrected accumulation)."""
import math

import pytest
import torch
from torch import nn

from helpers import compose_cfg, read_metrics
from lstsd.config import validate
from lstsd.data.types import Batch, DataInfo
from lstsd.methods import build_method
from lstsd.methods.base import RunContext
from lstsd.methods.consistency import MeanTeacher, sigmoid_rampup
from lstsd.methods.snapshots import Ensemble, SnapshotDistillation, SnapshotEnsembles
from lstsd.training.run import run

INFO = DataInfo("toy", num_classes=3, input_shape=(2,), num_train=3, num_val=0, num_test=0)


def make_method(*overrides, model=None, epochs=4):
    cfg = validate(compose_cfg(*overrides, f"trainer.epochs={epochs}")).method
    model = model or nn.Linear(2, 3)
    return build_method(cfg, RunContext(model=model, info=INFO, device=torch.device("cpu"), epochs=epochs,
                                              steps_per_epoch=1))


def log_softmax(row):
    m = math.log(sum(math.exp(v) for v in row))
    return [v - m for v in row]


def kl(p, log_q):
    return sum(pi * (math.log(pi) - lq) for pi, lq in zip(p, log_q))


# --------------------------------------------------------------------------- Snapshot Distillation
def test_sd_loss_is_eq3_with_asymmetric_distillation():
    sd = make_method("method=sd", "method.minigens=2", model=nn.Identity())
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, -0.5]])  # identity model: logits = x
    teacher = torch.tensor([[0.0, 2.0, 0.0], [1.0, 1.0, 3.0]])
    y = torch.tensor([0, 2])
    batch = Batch(x, y, torch.tensor([0, 1]))
    sd.on_epoch_start(0)
    loss, terms = sd.loss(batch, x)  # first mini-generation: lambda^S = 1, lambda^T = 0 -> CE only
    ce = -(log_softmax([1, 0, 0])[0] + log_softmax([0, 0.5, -0.5])[2]) / 2
    assert set(terms) == {"ce"}
    assert loss.item() == pytest.approx(ce, rel=1e-6)

    sd.snapshots = [lambda inp: teacher]  # M_1, the teacher of the second mini-generation
    sd.teacher_outputs.set(sd.snapshots[0])
    loss, terms = sd.loss(batch, x)
    # teacher divided by T = 2, student untempered; lambda^S = 1 + 1/T = 1.5, lambda^T = 1, no T^2
    p_t = [[math.exp(v) for v in log_softmax([t / 2 for t in row])] for row in teacher.tolist()]
    kd = (kl(p_t[0], log_softmax([1, 0, 0])) + kl(p_t[1], log_softmax([0, 0.5, -0.5]))) / 2
    assert terms["kd"].item() == pytest.approx(kd, rel=1e-6)
    assert loss.item() == pytest.approx(1.5 * ce + kd, rel=1e-6)

    sym = make_method("method=sd", "method.minigens=2", "method.asymmetric=false", "method.lambda_ce=1",
                      "method.t2_scale=true", model=nn.Identity())
    sym.snapshots = [lambda inp: teacher]
    sym.teacher_outputs.set(sym.snapshots[0])
    loss, terms = sym.loss(batch, x)  # Hinton's symmetric form: both divided by T, times T^2
    kd = 4 * (kl(p_t[0], log_softmax([0.5, 0, 0])) + kl(p_t[1], log_softmax([0, 0.25, -0.25]))) / 2
    assert terms["kd"].item() == pytest.approx(kd, rel=1e-6)
    assert loss.item() == pytest.approx(ce + kd, rel=1e-6)


def test_sd_teacher_is_the_previous_minigenerations_last_snapshot(tiny_cfg, tmp_path, monkeypatch):
    ends, seen = {}, []
    orig_end, orig_loss = SnapshotDistillation.on_epoch_end, SnapshotDistillation.loss

    def on_epoch_end(self, epoch):
        ends[epoch] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return orig_end(self, epoch)

    def loss(self, batch, logits):
        t = self.teacher
        seen.append((self.epoch, None if t is None else {k: v.clone() for k, v in t.state_dict().items()},
                     None if t is None else t.training))
        return orig_loss(self, batch, logits)

    monkeypatch.setattr(SnapshotDistillation, "on_epoch_end", on_epoch_end)
    monkeypatch.setattr(SnapshotDistillation, "loss", loss)
    res = run(tiny_cfg("method=sd", "trainer.epochs=6", "method.minigens=3"), tmp_path)
    assert res["minigen_end_epochs"] == [2, 4, 6]
    for epoch, state, training in seen:
        if epoch < 2:
            assert state is None  # no teacher in the first mini-generation
            continue
        expected = ends[1] if epoch < 4 else ends[3]  # the model after epochs 2 and 4
        assert training is False
        assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert len(seen) == 6 * 3
    assert any(e >= 2 for e, *_ in seen)
    rows = read_metrics(tmp_path)
    assert "loss_kd" not in rows[1]
    assert "loss_kd" in rows[2]
    assert res["minigen_test_acc"] == [rows[1]["test_acc"], rows[3]["test_acc"], rows[5]["test_acc"]]


def test_sd_learning_rate_restarts_at_each_minigeneration(tiny_cfg, tmp_path):
    run(tiny_cfg("method=sd", "trainer.epochs=6", "method.minigens=3"), tmp_path)
    lrs = [r["lr"] for r in read_metrics(tmp_path)]  # each epoch's first update; 3 updates per epoch
    base, half = 0.05, 0.025  # cosine over 2 epochs x 3 steps: t = 0 -> lr0, t = 3 -> lr0 / 2
    assert lrs == pytest.approx([base, half, base, half, base, half])
    flat = run(tiny_cfg("method=sd", "trainer.epochs=6", "method.minigens=3", "method.restart_lr=false"),
               tmp_path / "flat")
    lrs = [r["lr"] for r in read_metrics(tmp_path / "flat")]  # one cosine over the run
    assert lrs == pytest.approx([0.025 * (1 + math.cos(math.pi * e / 6)) for e in range(6)])
    assert flat["minigen_end_epochs"] == [2, 4, 6]


def test_minigeneration_lengths():
    assert make_method("method=sd", "method.minigens=4", epochs=10).ends == [3, 6, 8, 10]
    m = make_method("method=snapshot_ensembles", "method.minigen_lengths=[1,2,7]", epochs=10)
    assert m.ends == [1, 3, 10]
    assert m.lr_cycles == [1, 2, 7]
    assert [m.minigen(e) for e in range(10)] == [0, 1, 1, 2, 2, 2, 2, 2, 2, 2]


# --------------------------------------------------------------------------- ensembles
def test_ensemble_is_the_mean_of_its_members_softmax():
    torch.manual_seed(0)
    members = [nn.Linear(2, 3), nn.Linear(2, 3)]
    x = torch.randn(5, 2)
    out = Ensemble(members, [1.0, 1.0])(x).exp()
    expected = (members[0](x).softmax(-1) + members[1](x).softmax(-1)) / 2
    assert torch.allclose(out, expected, atol=1e-6)
    scaled = Ensemble(members, [1.0, 3.0])(x).exp()  # SD: M_k's logits times T^(k-1)
    assert torch.allclose(scaled, (members[0](x).softmax(-1) + (3 * members[1](x)).softmax(-1)) / 2, atol=1e-6)
    sd = make_method("method=sd_t3", "method.minigens=3", epochs=3)
    assert [sd.ensemble_scale(k) for k in range(3)] == [1.0, 3.0, 9.0]
    se = make_method("method=snapshot_ensembles", "method.minigens=3", epochs=3)
    assert [se.ensemble_scale(k) for k in range(3)] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("method", ["snapshot_ensembles", "sd"])
def test_reported_ensemble_accuracy_is_that_of_the_snapshots_mean(tiny_cfg, tmp_path, monkeypatch, method):
    from lstsd.data import build_data

    captured = {}
    orig = SnapshotEnsembles.on_epoch_end

    def on_epoch_end(self, epoch):
        captured["method"] = self
        return orig(self, epoch)

    monkeypatch.setattr(SnapshotEnsembles, "on_epoch_end", on_epoch_end)
    res = run(tiny_cfg(f"method={method}", "trainer.epochs=4", "method.minigens=2"), tmp_path)
    snaps = captured["method"].snapshots
    assert len(snaps) == 2
    cfg = validate(tiny_cfg())
    test = build_data(cfg.dataset, cfg.seed, torch.device("cpu")).evals["test"]
    scale = 2.0 if method == "sd" else 1.0  # T = 2 for the second snapshot of SD
    correct = total = 0
    nll = 0.0
    with torch.no_grad():
        for b in test.epoch(0):
            p = (snaps[0](b.x).softmax(-1) + (scale * snaps[1](b.x)).softmax(-1)) / 2
            correct += (p.argmax(1) == b.y).sum().item()
            nll -= p[torch.arange(len(b.y)), b.y].log().sum().item()
            total += len(b.y)
    assert res["ensemble_test_acc_final"] == pytest.approx(100.0 * correct / total)
    rows = read_metrics(tmp_path)
    assert rows[-1]["ensemble_test_loss"] == pytest.approx(nll / total, rel=1e-5)  # the mixture's NLL
    assert "ensemble_test_acc" not in rows[0]
    assert "ensemble_test_acc" in rows[3]  # only when a cycle ends


# --------------------------------------------------------------------------- Mean Teacher
def test_mean_teacher_ema_arithmetic():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    mt = make_method("method=mean_teacher", "method.decay=0.6", "method.decay_warmup=true", model=model)
    teacher = mt.teacher
    assert teacher.weight.item() == 1.0
    assert teacher.training is False
    expected = 1.0
    # update s uses min(1 - 1/(s + 1), 0.6): 0.5, then 0.6, 0.6
    for s, (w, decay) in enumerate([(3.0, 0.5), (5.0, 0.6), (-1.0, 0.6)], start=1):
        assert mt.decay == pytest.approx(decay)
        with torch.no_grad():
            model.weight.fill_(w)
        mt.after_step(None, None)
        expected = decay * expected + (1 - decay) * w
        assert teacher.weight.item() == pytest.approx(expected, rel=1e-6), s
    assert expected == pytest.approx(0.6 * (0.6 * 2.0 + 0.4 * 5.0) + 0.4 * -1.0)  # 1.52

    const = make_method("method=mean_teacher", "method.decay=0.6", model=nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        const.teacher.weight.fill_(1.0)
        const.model.weight.fill_(3.0)
    const.after_step(None, None)  # the default: decay 0.6 from the first update (the paper's formula)
    assert const.teacher.weight.item() == pytest.approx(0.6 * 1.0 + 0.4 * 3.0)


def test_mean_teacher_loss_and_rampup():
    model = nn.Linear(3, 3)  # the identity map, so that the EMA teacher's logits are its input
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
        model.bias.zero_()
    mt = make_method("method=mean_teacher", "method.loss=mse", "method.weight=10", "method.rampup_epochs=4",
                     model=model)
    mt.on_epoch_start(2)
    w = 10 * math.exp(-5 * (1 - 2 / 4) ** 2)
    assert mt.w == pytest.approx(w)
    x = torch.tensor([[0.0, math.log(3.0), 0.0]])  # softmax: [0.2, 0.6, 0.2]; teacher = identity too
    s = torch.tensor([[math.log(2.0), 0.0, math.log(2.0)]])  # softmax: [0.4, 0.2, 0.4]
    loss, terms = mt.loss(Batch(x, torch.tensor([1]), torch.tensor([0])), s)
    mse = (0.2 ** 2 + 0.4 ** 2 + 0.2 ** 2) / 3
    ce = -math.log(0.2)
    assert terms["consistency"].item() == pytest.approx(mse, rel=1e-5)
    assert loss.item() == pytest.approx(ce + w * mse, rel=1e-5)
    assert sigmoid_rampup(0, 5) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(7, 5) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0


def test_mean_teacher_reports_the_ema_teacher(tiny_cfg, tmp_path):
    from lstsd.data import build_data
    from lstsd.training.evaluation import evaluate
    from lstsd.models import build_model

    res = run(tiny_cfg("method=mean_teacher"), tmp_path)
    rows = read_metrics(tmp_path)
    assert "ema_test_acc" in rows[0]
    assert "loss_consistency" in rows[0]
    conf = validate(tiny_cfg())
    data = build_data(conf.dataset, conf.seed, torch.device("cpu"))
    teacher = build_model(conf.model, data.info.num_classes, data.info.input_shape)
    teacher.load_state_dict(torch.load(tmp_path / "last.pt", weights_only=False)["method"]["ema"])
    loss, acc = evaluate(teacher, data.evals["test"]).values()  # the checkpointed EMA weights, evaluated afresh
    assert res["ema_test_acc_final"] == pytest.approx(acc)
    assert rows[-1]["ema_test_loss"] == pytest.approx(loss)
    assert res["ema_test_acc_final"] != res["test_acc_final"] or rows[-1]["ema_test_loss"] != rows[-1]["test_loss"]


def test_resuming_with_other_minigenerations_is_refused(tiny_cfg, tmp_path):
    from lstsd.errors import ConfigError, TrainingError

    run(tiny_cfg("method=snapshot_ensembles", "trainer.epochs=4", "method.minigens=2"), tmp_path)
    with pytest.raises(ConfigError, match="holds a run of another configuration \\(method.minigens: 2 -> 4\\)"):
        run(tiny_cfg("method=snapshot_ensembles", "trainer.epochs=4", "method.minigens=4", "trainer.skip_completed=false"),
            tmp_path)
    # forced, the method's own check still refuses snapshots of other mini-generations
    with pytest.raises(TrainingError, match="mini-generations end at epochs \\[2, 4\\], this run's at \\[1, 2, 3, 4\\]"):
        run(tiny_cfg("method=snapshot_ensembles", "trainer.epochs=4", "method.minigens=4", "trainer.skip_completed=false",
                     "trainer.force_resume=true"), tmp_path)


# --------------------------------------------------------------------------- Temporal Ensembling
def test_temporal_ensembling_accumulation_and_bias_correction():
    te = make_method("method=temporal_ensembling", "method.rampup_epochs=0", "method.loss=kl", model=nn.Identity())
    idx = torch.tensor([0, 1, 2])
    batch = Batch(None, torch.tensor([0, 1, 2]), idx)
    z1 = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]))
    z2 = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]]))
    te.on_epoch_start(0)
    assert te.w == 0.0
    assert te.target(batch) is None  # no target in the first epoch
    te.after_step(batch, z1)
    te.on_epoch_end(0)
    te.on_epoch_start(1)
    assert te.w == 30.0
    target, is_probs = te.target(batch)
    assert is_probs
    assert torch.allclose(target, z1.exp(), atol=1e-6)  # Z = 0.4 z1, / (1 - 0.6) = z1
    te.after_step(batch, z2)
    te.on_epoch_end(1)
    # Z = 0.6 * 0.4 z1 + 0.4 z2 = 0.24 z1 + 0.4 z2; / (1 - 0.36) -> 0.375 z1 + 0.625 z2
    assert torch.allclose(te.accumulated.read(idx), 0.24 * z1.exp() + 0.4 * z2.exp(), atol=1e-6)
    target, _ = te.target(batch)
    assert torch.allclose(target, 0.375 * z1.exp() + 0.625 * z2.exp(), atol=1e-6)
    assert torch.allclose(target.sum(1), torch.ones(3))
    # the KL consistency term against that target, by hand for sample 0
    loss, terms = te.loss(Batch(None, torch.tensor([0]), torch.tensor([0])), torch.zeros(1, 3))
    p = (0.375 * z1.exp() + 0.625 * z2.exp())[0].tolist()
    assert terms["consistency"].item() == pytest.approx(kl(p, [math.log(1 / 3)] * 3), rel=1e-5)
    assert loss.item() == pytest.approx(math.log(3) + 30.0 * kl(p, [math.log(1 / 3)] * 3), rel=1e-5)


def test_temporal_ensembling_runs_with_its_bank(tiny_cfg, tmp_path):
    res = run(tiny_cfg("method=temporal_ensembling", "method.rampup_epochs=2", "method.bank_dtype=float16"),
              tmp_path)
    rows = read_metrics(tmp_path)
    assert "loss_consistency" not in rows[0]
    assert "loss_consistency" in rows[1]
    assert res["bank_bytes"] == 2 * 40 * 4 * 2  # two N x C float16 banks


def test_se_and_sd_share_the_first_minigeneration_exactly(tiny_cfg, tmp_path):
    se = run(tiny_cfg("method=snapshot_ensembles", "trainer.epochs=4", "method.minigens=2"), tmp_path / "se")
    sd = run(tiny_cfg("method=sd", "trainer.epochs=4", "method.minigens=2"), tmp_path / "sd")
    a, b = read_metrics(tmp_path / "se"), read_metrics(tmp_path / "sd")
    assert a[:2] == b[:2]  # same initialisation, same batches, CE only (as in SD Table 3)
    assert a[2]["train_loss"] != b[2]["train_loss"]
    assert se["minigen_test_acc"][0] == sd["minigen_test_acc"][0]
