"""LW-KD: SynMNIST rendering from real-format IDX files, LeNet-5, the shift of Eq. 3, the loss of Eq. 8 and the
separate updates of student and discriminator."""
import gzip
import math
from collections import Counter

import numpy as np
import pytest
import torch

from helpers import TINY, built_method, compose_cfg
from lstsd.config import validate
from lstsd.errors import ConfigError
from lstsd.data import build_data
from lstsd.data.types import Batch
from lstsd.data.readers.synmnist import digit_sources, read_idx
from lstsd.methods.lwkd import LWKD, shift
from lstsd.training.run import run


def write_idx(path, array: np.ndarray):
    """The IDX format: two zero bytes, type 0x08 (unsigned byte), ndim, big-endian sizes, then the data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if str(path).endswith(".gz") else open)(path, "wb").write(data)


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """A tiny MNIST in torchvision's layout: 3 images of each digit d, every pixel 20 d + 10."""
    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    labels = np.repeat(np.arange(10), 3)
    images = np.broadcast_to((20 * labels + 10)[:, None, None], (30, 28, 28))
    for prefix, gz in (("train", ".gz"), ("t10k", "")):
        write_idx(raw / f"{prefix}-images-idx3-ubyte{gz}", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{gz}", labels)
    return root


def synmnist(root, k, n):
    conf = validate(compose_cfg("dataset=synmnist", f"dataset.root={root}", f"dataset.num_classes={k}",
                                f"dataset.num_train={n}", "dataset.num_test=20"))
    return build_data(conf.dataset, 0, torch.device("cpu"))


def test_idx_reader_and_sources(mnist_root, tmp_path):
    images = read_idx(mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz")
    assert images.shape == (30, 28, 28)
    assert images[4, 0, 0] == 30  # image 4 is a 1
    sources, name = digit_sources(str(mnist_root))
    assert name == "mnist"
    assert sources["test"][0].shape == (30, 28, 28)
    sources, name = digit_sources(str(tmp_path))  # no MNIST here: scikit-learn's digits
    assert name == "sklearn_digits"
    assert sources["train"][0].shape == (899, 8, 8)
    assert sources["train"][0].max() == 255


@pytest.mark.parametrize("k,columns", [
    (10, [range(0, 28)]),
    (100, [range(0, 14), range(14, 28)]),  # two digits, 14 output columns each
    (1000, [range(0, 9), range(10, 18), range(19, 28)]),  # three digits of 28 / 3 columns (borders blend)
])
def test_synmnist_renders_the_zero_padded_digits(mnist_root, k, columns):
    data = synmnist(mnist_root, k, 3 * k)
    x, y = data.train.x, data.train.y
    assert x.shape == (3 * k, 1, 28, 28)
    assert x.dtype == torch.uint8
    assert data.info.num_classes == k
    assert Counter(y.tolist()) == Counter({c: 3 for c in range(k)})  # balanced
    width = len(str(k - 1))
    for i in [0, 1, 7, len(y) // 2, len(y) - 1]:
        digits = str(int(y[i])).zfill(width)
        for d, cols in zip(digits, columns):
            assert (x[i, 0][:, list(cols)] == 20 * int(d) + 10).all(), (int(y[i]), d)


def test_synmnist_is_reproducible_and_offline(tmp_path):
    a, b = synmnist(tmp_path, 100, 200), synmnist(tmp_path, 100, 200)  # scikit-learn's digits
    assert torch.equal(a.train.x, b.train.x)
    assert a.info.input_shape == (1, 28, 28)


def test_lenet5_parameter_counts():
    from types import SimpleNamespace

    from lstsd.models import build_model

    count = lambda k: sum(p.numel() for p in build_model(SimpleNamespace(arch="lenet5"), k, (1, 28, 28)).parameters())  # noqa
    assert (count(10), count(100)) == (61_706, 69_356)  # LW-KD: ~61.7K and ~69.4K


def test_shift_swaps_argmax_and_label():
    p = torch.tensor([[0.1, 0.6, 0.3], [0.2, 0.3, 0.5], [0.7, 0.2, 0.1]])
    out = shift(p, torch.tensor([0, 2, 1]))
    assert torch.allclose(out, torch.tensor([[0.6, 0.1, 0.3], [0.2, 0.3, 0.5], [0.2, 0.7, 0.1]]))


TEACHER = '["model=lenet5","trainer.epochs=1","dataset.num_train=120","dataset.num_test=20","dataset.batch_size=32"]'
T28 = (*[o for o in TINY if not o.startswith("dataset.shape")], "dataset.shape=[1,28,28]")


def build_lwkd(tmp_path, *overrides):
    """The LW-KD student's method, built (its teacher's run trains), not trained."""
    ov = [*T28, "method=lwkd", f"method.teacher_cache={tmp_path / 'cache'}", f"method.teacher={TEACHER}", *overrides]
    return built_method(ov, tmp_path / "run")


def test_teacher_targets_map_each_sample_to_a_synthetic_twin_of_its_class(tmp_path):
    m = build_lwkd(tmp_path)
    syn = build_data(validate(compose_cfg("dataset=synmnist", "dataset.num_classes=4", "dataset.num_train=120",
                                          "dataset.num_test=20")).dataset, 0, torch.device("cpu")).train
    y = m.ctx.train.y
    assert torch.equal(syn.y[m.mapped], y)  # the twin has the sample's class
    first = {c: int(torch.nonzero(y == c)[0]) for c in range(4)}
    for c, i in first.items():  # the first sample of class c gets the first synthetic sample of class c
        assert int(m.mapped[i]) == int(torch.nonzero(syn.y == c)[0])
    with torch.no_grad():
        expected = m.teacher(syn.get(m.mapped[:5], None).x)
    assert torch.allclose(m.bank.read(torch.arange(5)), expected, atol=1e-6)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    build_lwkd(tmp_path)  # the same (K, seed, settings): the cached teacher
    assert len(list((tmp_path / "cache").iterdir())) == 1
    build_lwkd(tmp_path, "seed=1")  # another seed: another teacher
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_lwkd_loss_is_eq8(tmp_path):
    m = build_lwkd(tmp_path, "method.alpha=0.3", "method.beta=0.2", "method.temperature=2", "method.t2_scale=true")
    with torch.no_grad():  # D(p) = sum(relu(p)) - 1: a hand-computable discriminator
        m.disc = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.ReLU(), torch.nn.Linear(1, 1))
        m.disc[0].weight.fill_(1.0), m.disc[0].bias.zero_(), m.disc[2].weight.fill_(1.0), m.disc[2].bias.fill_(-1.0)
    teacher = torch.tensor([[2.0, 0.0, 0.0, 4.0]])
    m.bank.values[0] = teacher
    s = torch.tensor([[0.5, 1.0, -1.0, 0.0]])
    loss, terms = m.loss(Batch(None, torch.tensor([1]), torch.tensor([0])), s)
    p_t = [math.exp(v / 2) for v in teacher[0].tolist()]
    p_t = [v / sum(p_t) for v in p_t]
    p_t[1], p_t[3] = p_t[3], p_t[1]  # shift: the arg-max (class 3) swapped with the label (class 1)
    log_ps = [v / 2 for v in s[0].tolist()]
    z = math.log(sum(math.exp(v) for v in log_ps))
    log_ps = [v - z for v in log_ps]
    kl = 4 * sum(pt * (math.log(pt) - lq) for pt, lq in zip(p_t, log_ps))  # tau^2 KL
    ce = -(s[0, 1].item() - math.log(sum(math.exp(v) for v in s[0].tolist())))
    d = 1.0 - 1.0  # D's logit: sum of the probabilities (1) - 1 = 0
    adv = math.log(1 - 1 / (1 + math.exp(-d)))  # log(1 - sigmoid(0)) = log 0.5
    assert terms["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert terms["adv"].item() == pytest.approx(adv)
    assert loss.item() == pytest.approx(0.7 * ce + 0.3 * kl + 0.2 * adv, rel=1e-5)
    m.cfg.t2_scale = False  # the default: Eq. 4 and Eq. 1 as printed, no tau^2
    loss, terms = m.loss(Batch(None, torch.tensor([1]), torch.tensor([0])), s)
    assert terms["kl"].item() == pytest.approx(kl / 4, rel=1e-5)


def test_student_and_discriminator_update_only_their_own_parameters(tmp_path):
    m = build_lwkd(tmp_path)
    model = m.model
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = next(iter(m.ctx.train.epoch(0)))
    student0 = [p.clone() for p in model.parameters()]
    disc0 = [p.clone() for p in m.disc.parameters()]
    loss, logits, terms = m.training_step(batch)
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in m.disc.parameters())  # D frozen during the student's backward
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(disc0, m.disc.parameters()))
    student1 = [p.clone() for p in model.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(student0, student1))
    m.after_step(batch, logits)  # the discriminator's step
    assert all(torch.equal(a, b) for a, b in zip(student1, model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(disc0, m.disc.parameters()))


def test_lwkd_runs_and_resumes_its_discriminator(tmp_path):
    ov = [*T28, "method=lwkd", f"method.teacher_cache={tmp_path / 'cache'}", f"method.teacher={TEACHER}"]
    res = run(compose_cfg(*ov), tmp_path / "a", overrides=ov)
    assert res["teacher_dataset"] == "synmnist"
    assert "teacher_test_acc" in res
    state = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["method"]
    assert set(state) == {"disc", "disc_opt"}


@pytest.mark.parametrize("override,message", [
    ("method.alpha=1.2", "method.alpha=1.2 is invalid: allowed a number in [0, 1]"),
    ("method.temperature=0", "method.temperature=0.0 is invalid: allowed a number > 0"),
    ("method.teacher_source=imagenet", "method.teacher_source='imagenet' is invalid"),
    ("method.beta=-1", "method.beta=-1.0 is invalid"),
])
def test_lwkd_bad_input(override, message):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg("method=lwkd", override))
    assert message in str(e.value)


def test_table7_w_o_syn_is_table3_kd_t5_unchanged():
    """LW-KD Table 7's w/o SYN row is Table 3's KD[T5] (Section 5.2): the two experiments compose it identically,
    the experiment's name and the row's label aside (Table 7 once set alpha 0.5, T 6 on it experiment-wide)."""
    from omegaconf import OmegaConf

    def job(experiment, method):
        cfg = OmegaConf.to_container(compose_cfg(f"experiment={experiment}", f"method={method}", "model=resnet20"),
                                     resolve=True)
        cfg.pop("name"), cfg["method"].pop("label")
        return cfg

    for dataset in ("cifar10", "cifar100"):
        t3 = job(f"lwkd_table3_{dataset}", "kd_lenetw")
        assert job(f"lwkd_table7_{dataset}", "lwkd_wo_syn") == t3
        assert (t3["method"]["alpha"], t3["method"]["temperature"]) == (0.9, 4.0)


def test_synmnist_of_the_paper_needs_mnist(mnist_root, tmp_path):
    """dataset.digits=mnist reads MNIST or stops in one line; LW-KD's table experiments ask for it, so that their
    teacher is never trained on scikit-learn's digits without a word."""
    with pytest.raises(ConfigError, match=r"dataset.digits=mnist is invalid for dataset.root=.*: no MNIST IDX files"):
        digit_sources(str(tmp_path), "mnist")
    assert digit_sources(str(mnist_root), "mnist")[1] == "mnist"
    assert digit_sources(str(mnist_root), "sklearn")[1] == "sklearn_digits"  # asked for: even with MNIST there
    with pytest.raises(ConfigError, match=r"method.synmnist_digits=mnist is invalid for dataset.root=/nowhere"):
        validate(compose_cfg("method=lwkd", "method.synmnist_digits=mnist", "dataset.root=/nowhere"))
    validate(compose_cfg("method=lwkd", "method.synmnist_digits=mnist", f"dataset.root={mnist_root}"))


def test_lwkd_table_experiments_refuse_the_fallback_before_training(refused, tmp_path):
    line = refused("experiment=lwkd_table7_cifar100", "dataset.root=/nowhere", f"hydra.sweep.dir={tmp_path / 's'}")
    assert line.startswith("lstsd: error: method.synmnist_digits=mnist is invalid for dataset.root=/nowhere")
