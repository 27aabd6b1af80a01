"""KD with a teacher run, label smoothing, Tf-KD (self and reg) and DLB, pinned against hand-computed values."""
import json
import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from helpers import TINY, built_method, compose_cfg, read_metrics, tiny
from lstsd.config import validate
from lstsd.errors import ConfigError
from lstsd.data.types import Batch
from lstsd.methods.dlb import DLB
from lstsd.training.run import run


def log_softmax(row):
    m = math.log(sum(math.exp(v) for v in row))
    return [v - m for v in row]


def softmax(row):
    return [math.exp(v) for v in log_softmax(row)]


def kl(p, log_q):
    return sum(pi * (math.log(pi) - lq) for pi, lq in zip(p, log_q))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher")
    run(tiny(), d, overrides=list(TINY))
    return d


def build(*overrides, run_dir):
    """The method object of a run (the method is built, nothing trained)."""
    return built_method([*TINY, *overrides], run_dir)


S = [[1.0, 0.0, -1.0, 0.5], [0.2, 0.1, 0.0, -0.3]]
TL = [[0.0, 2.0, 0.0, 1.0], [1.0, -1.0, 3.0, 0.0]]
Y = [0, 2]


def test_kd_loss_with_a_teacher_run(teacher_dir, tmp_path):
    kd = build("method=kd", f"method.teacher_run={teacher_dir}", "method.alpha=0.7", "method.temperature=2",
               run_dir=tmp_path)
    assert not kd.teacher.training
    assert not any(p.requires_grad for p in kd.teacher.parameters())
    kd.teacher_outputs.precompute = False  # a teacher that answers TL whatever the batch
    kd.teacher_outputs.set(lambda x: torch.tensor(TL))
    loss, terms = kd.loss(Batch(None, torch.tensor(Y), torch.tensor([0, 1])), torch.tensor(S))
    ce = -(log_softmax(S[0])[0] + log_softmax(S[1])[2]) / 2
    k = 4 * sum(kl(softmax([t / 2 for t in TL[i]]), log_softmax([s / 2 for s in S[i]])) for i in range(2)) / 2
    assert terms["kd"].item() == pytest.approx(k, rel=1e-5)
    assert loss.item() == pytest.approx(0.3 * ce + 0.7 * k, rel=1e-5)


def test_kd_run_reports_its_teacher(teacher_dir, tmp_path):
    res = run(tiny("method=kd", f"method.teacher_run={teacher_dir}"), tmp_path)
    teacher = json.loads((teacher_dir / "results.json").read_text())
    assert res["teacher_dir"] == str(teacher_dir)
    assert res["teacher_test_acc"] == teacher["test_acc_final"]
    first = read_metrics(tmp_path)[0]
    assert first["teacher_test_acc"] == teacher["test_acc_final"]  # the loaded weights are the teacher's
    assert "loss_kd" in first


def test_bad_teacher_runs_are_config_errors(teacher_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"method.teacher_run='/does/not/exist' is invalid: allowed the "
                                          r"directory of a finished lstsd run \(missing: results.json"):
        build("method=kd", "method.teacher_run=/does/not/exist", run_dir=tmp_path)
    with pytest.raises(ConfigError, match="allowed a run with 7 classes like this dataset \\(it has 4\\)"):
        build("method=kd", f"method.teacher_run={teacher_dir}", "dataset.num_classes=7", run_dir=tmp_path)
    with pytest.raises(ConfigError, match="allowed a run directory, or null with method.teacher a list of overrides"):
        build("method=kd", run_dir=tmp_path / "no_teacher")  # checked before the data is loaded


def test_an_explicit_teacher_run_replaces_the_default_teacher(teacher_dir, tmp_path):
    """method=tfkd_self trains its own teacher unless method.teacher_run names one: then nothing is trained."""
    m = build("method=tfkd_self", f"method.teacher_run={teacher_dir}", f"method.teacher_cache={tmp_path / 'c'}",
              run_dir=tmp_path)
    assert m.teacher_dir == str(teacher_dir)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("args,fragment", [
    (["method=kd", "method.teacher_run=/nope"], "method.teacher_run='/nope' is invalid"),
    (["method=kd", "method.teacher_run=/nope", "method.alpha=1.5"], "method.alpha=1.5 is invalid: allowed a number in [0, 1]"),
    (["method=kd", "method.teacher_run=/nope", "method.temperature=0"], "method.temperature=0.0 is invalid: allowed a finite number > 0"),
    (["method=dlb", "method.temperature=-1"], "method.temperature=-1.0 is invalid: allowed a number > 0"),
    (["method=tfkd_reg", "method.alpha=-0.1"], "method.alpha=-0.1 is invalid: allowed a number in [0, 1]"),
    (["method=label_smoothing", "method.epsilon=1"], "method.epsilon=1.0 is invalid: allowed a number in [0, 1)"),
])
def test_bad_distillation_input_exits_2_in_one_line(refused, args, fragment):
    """In process, the console script's own main (tests/test_config_cli.py runs one case as a separate process)."""
    assert fragment in refused(*args, "trainer.epochs=1")


def test_teacher_trained_once_and_students_independent_of_the_cache(tmp_path):
    cache = tmp_path / "cache"
    args = ("method=tfkd_self", f"method.teacher_cache={cache}")
    a = run(tiny(*args), tmp_path / "a", overrides=[*TINY, *args])  # trains the teacher
    (teacher,) = cache.iterdir()
    stamp = (teacher / "results.json").stat().st_mtime_ns
    b = run(tiny(*args), tmp_path / "b", overrides=[*TINY, *args])  # finds it
    assert (teacher / "results.json").stat().st_mtime_ns == stamp
    assert len(list(cache.iterdir())) == 1
    assert read_metrics(tmp_path / "a") == read_metrics(tmp_path / "b")
    assert a["teacher_dir"] == b["teacher_dir"] == str(teacher)
    overrides = (teacher / "overrides.txt").read_text().split()
    assert overrides[-1] == "method=vanilla"
    assert "model=digits_cnn" in overrides  # the student's own architecture
    vanilla = run(tiny(), tmp_path / "v")  # the teacher is exactly the vanilla run of the student
    assert json.loads((teacher / "results.json").read_text())["test_acc_final"] == vanilla["test_acc_final"]


def test_label_smoothing_loss():
    from lstsd.methods.kd import LabelSmoothing

    m = LabelSmoothing.__new__(LabelSmoothing)
    m.cfg = type("C", (), {"epsilon": 0.1})
    loss, _ = m.loss(Batch(None, torch.tensor(Y), None), torch.tensor(S))
    q = lambda y: [0.9 + 0.025 if k == y else 0.025 for k in range(4)]  # noqa: E731
    expected = -sum(sum(qk * lp for qk, lp in zip(q(Y[i]), log_softmax(S[i]))) for i in range(2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_tfkd_reg_loss_by_hand(tmp_path):
    m = build("method=tfkd_reg", "method.alpha=0.4", "method.temperature=5", "method.correct_prob=0.9",
              "method.multiplier=3", run_dir=tmp_path)
    pd = m.virtual_teacher(torch.tensor(Y), 4)
    assert pd.tolist()[0] == pytest.approx([0.9, 0.1 / 3, 0.1 / 3, 0.1 / 3])
    loss, terms = m.loss(Batch(None, torch.tensor(Y), None), torch.tensor(S))
    ce = -(log_softmax(S[0])[0] + log_softmax(S[1])[2]) / 2
    reg = sum(kl(softmax([p / 5 for p in pd.tolist()[i]]), log_softmax(S[i])) for i in range(2)) / 2
    assert terms["reg"].item() == pytest.approx(reg * 3 / 4, rel=1e-5)  # multiplier / K (4 classes)
    assert loss.item() == pytest.approx(0.6 * ce + 0.4 * 3 / 4 * reg, rel=1e-5)


@pytest.mark.parametrize("classes", [10, 100])
def test_tfkd_multipliers_equal_the_official_formulas(tmp_path, classes):
    """The official code's terms on the same tensors: loss_kd_regularization, multiplier * nn.KLDivLoss()(
    log_softmax(s), softmax(p^d / T)), and loss_kd_self, nn.KLDivLoss()(log_softmax(s / T), softmax(t / T)) *
    T^2 * multiplier; nn.KLDivLoss() averages over batch and classes, so the same multiplier means m / K here."""
    torch.manual_seed(classes)
    s, t, y = torch.randn(8, classes), torch.randn(8, classes), torch.randint(0, classes, (8,))
    reg = build("method=tfkd_reg", f"dataset.num_classes={classes}", "dataset.num_train=200", run_dir=tmp_path)
    _, terms = reg.loss(Batch(None, y, None), s)
    teacher_soft = torch.full_like(s, 0.01 / (classes - 1)).scatter_(1, y[:, None], 0.99)
    official = torch.nn.KLDivLoss()(F.log_softmax(s, dim=1), F.softmax(teacher_soft / 20, dim=1)) * 100
    assert terms["reg"].item() == pytest.approx(official.item(), rel=1e-5)
    from lstsd.methods.losses import kd_loss

    official_self = torch.nn.KLDivLoss()(F.log_softmax(s / 6, dim=1), F.softmax(t / 6, dim=1)) * 36 * 50
    ours = kd_loss(s, t, 6.0) * (50 / classes)  # method=tfkd_self: T 6, multiplier 50
    assert ours.item() == pytest.approx(official_self.item(), rel=1e-5)


# --------------------------------------------------------------------------- DLB
def test_dlb_batch_composition(tmp_path, monkeypatch):
    steps = []  # (epoch, new indices, repeated indices, kd target, logits of the new half)
    orig_step, orig_get = DLB.training_step, None
    from lstsd.data.loaders.memory import MemoryLoader

    orig_get = MemoryLoader.get
    fetched = []

    def get(self, index, generator):
        fetched.append(index.clone())
        return orig_get(self, index, generator)

    def training_step(self, batch):
        fetched.clear()
        target = None if self.last is None else self.last[1].clone()
        loss, logits, terms = orig_step(self, batch)
        rep = fetched[-1] if self.last is not None else None
        steps.append((self.epoch, batch.index.tolist(), None if rep is None else rep.tolist(), target,
                      logits.detach().clone(), "kd" in terms))
        return loss, logits, terms

    monkeypatch.setattr(MemoryLoader, "get", get)
    monkeypatch.setattr(DLB, "training_step", training_step)
    run(tiny("method=dlb"), tmp_path)  # 40 samples, batches of 16, 16, 8; 3 epochs
    assert len(steps) == 9
    assert [len(s[1]) for s in steps] == [16, 16, 8] * 3
    assert steps[0][2] is None
    assert not steps[0][5]  # the first step of training: no repeated half, no KD
    for prev, cur in zip(steps, steps[1:]):
        assert cur[2] == prev[1]  # the repeated half is the previous step's new half (across epochs too)
        assert torch.equal(cur[3], prev[4])
        assert cur[5]  # its KD target: the previous step's logits
    # the first step of epochs 2 and 3 repeats the previous epoch's partial last batch of 8
    assert [len(s[2]) for s in steps[1:]] == [16, 16, 8, 16, 16, 8, 16, 16]
    for e in range(3):
        new = Counter(i for s in steps if s[0] == e for i in s[1])
        assert new == Counter(range(40))  # every sample once as new per epoch
        repeated = Counter(i for s in steps[1:] if s[2] and steps[steps.index(s) - 1][0] == e for i in s[2])
        assert repeated == (Counter(range(40)) if e < 2 else Counter(range(40)) - Counter(steps[-1][1]))


def test_dlb_loss_by_hand_on_the_repeated_half():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)

    class Train:  # the training set: sample i is the vector (i, 1, -i)
        rank = 0

        def get(self, index, generator):
            x = torch.stack([index.float(), torch.ones(len(index)), -index.float()], 1)
            return Batch(x, index % 2, index)

    from lstsd.methods.base import RunContext

    m = DLB(type("C", (), {"alpha": 0.5, "temperature": 3.0, "forward": "separate"}),
            RunContext(model=model, info=None, device=torch.device("cpu"), epochs=1, steps_per_epoch=1,
                       train=Train()))
    m.on_epoch_start(0)
    new = Train().get(torch.tensor([4, 5]), None)
    z_prev = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    m.last = (torch.tensor([0, 1]), z_prev)
    loss, logits, terms = m.training_step(new)
    rep = Train().get(torch.tensor([0, 1]), None)
    with torch.no_grad():
        out_new, out_rep = model(new.x).tolist(), model(rep.x).tolist()
    ys = [0, 1, 0, 1]
    ce = -sum(log_softmax(o)[y] for o, y in zip(out_new + out_rep, ys)) / 4  # mean over both halves
    kd = 9 * sum(kl(softmax([v / 3 for v in z_prev[i].tolist()]), log_softmax([v / 3 for v in out_rep[i]]))
                 for i in range(2)) / 2
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert terms["kd"].item() == pytest.approx(kd, rel=1e-5)
    assert loss.item() == pytest.approx(ce + 0.5 * kd, rel=1e-5)
    assert logits.shape == (2, 2)
    assert torch.allclose(logits, torch.tensor(out_new))  # the new half's logits


# The official code's per-model CIFAR-100 settings (alpha, T, multiplier), transcribed from its params.json files:
# experiments/base_experiments/base_<model>/ (reg_alpha, reg_temperature, multiplier) and
# experiments/kd_experiments/<model>_distill/<model>_self_teacher/ (alpha, temperature, multiplier).
OFFICIAL_TFKD = {
    "tfkd_reg": (0.1, 20.0, 100.0), "tfkd_reg_googlenet": (0.1, 40.0, 50.0),
    "tfkd_reg_mobilenetv2": (0.95, 40.0, 1.0), "tfkd_reg_shufflenetv2": (0.95, 10.0, 1.0),
    "tfkd_self": (0.95, 6.0, 50.0), "tfkd_self_densenet121": (0.9, 20.0, 50.0),
    "tfkd_self_googlenet": (0.4, 20.0, 50.0), "tfkd_self_mobilenetv2": (0.95, 20.0, 1.0),
    "tfkd_self_resnext29": (0.9, 20.0, 100.0), "tfkd_self_shufflenetv2": (0.95, 20.0, 1.0),
}


@pytest.mark.parametrize("method", sorted(OFFICIAL_TFKD))
def test_tfkd_per_model_configs_are_the_official_settings(method):
    cfg = validate(compose_cfg(f"method={method}")).method
    assert (cfg.alpha, cfg.temperature, cfg.multiplier) == OFFICIAL_TFKD[method]
    assert cfg.label == method
    assert cfg.name == ("tfkd_reg" if method.startswith("tfkd_reg") else "kd")
    if method.startswith("tfkd_reg"):
        assert cfg.correct_prob == 0.99  # hard-coded in the official loss_kd_regularization
    else:
        assert list(cfg.teacher) == []
        assert cfg.teacher_run is None  # the student's own architecture
