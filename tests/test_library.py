"""The library: lstsd.method(...) in a plain PyTorch loop trains bit for bit as `lstsd method=...` (same seed, data
order and model), its configuration is the command line's, bad input and hooks out of order raise clear errors,
and the plain-loop example runs end to end."""
import os
import re
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lstsd
from helpers import REPO, TINY, compose_cfg
from lstsd.config import validate
from lstsd.data import build_data
from lstsd.models import build_model
from lstsd.training.run import run, seed_everything
from lstsd.training.schedules import build_schedule

# TINY (40 synthetic 8x8 images, 4 classes, batches of 16, a small CNN with batch norm) with dropout, so that the
# global random stream must be drawn in the same order too, and a constant learning rate (SD brings its own)
SAME = (*TINY, "schedule=constant", "model.dropout=0.2", "trainer.epochs=2")
CASES = {  # method: (its overrides as keyword hyper-parameters, the dataset given to the library)
    "lstsd": ({"minigen_epochs": 1}, False),
    "sd": ({"minigens": 2}, True),
    "mean_teacher": ({"decay": 0.9, "rampup_epochs": 1}, False),
    "temporal_ensembling": ({"rampup_epochs": 1}, False),
    "dlb": ({}, True),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread is the fastest


def plain_loop(cfg, name: str, hparams: dict, with_dataset: bool):
    """The run of ``cfg`` as a plain loop: the framework's seed, data order (its loader) and model; the optimiser
    and the step written out; the method built by lstsd.method and driven by its loop API."""
    conf = validate(cfg)
    seed_everything(conf.seed)
    data = build_data(conf.dataset, conf.seed, torch.device("cpu"))
    model = build_model(conf.model, data.info.num_classes, data.info.input_shape)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    n, epochs = data.info.num_train, conf.trainer.epochs
    whole = data.train.get(torch.arange(n), None)  # the training set as the loader serves it (normalised)
    dataset = lstsd.IndexedDataset(TensorDataset(whole.x, whole.y), augment=False) if with_dataset else None
    method = lstsd.method(name, num_samples=n, num_classes=data.info.num_classes, epochs=epochs, model=model,
                          dataset=dataset, seed=conf.seed, **hparams)
    schedule = build_schedule(conf.schedule, optimizer, len(data.train), epochs, method.lr_cycles)
    step = 0
    for epoch in range(epochs):
        model.train()
        method.on_epoch_start(epoch)
        for x, y, index in data.train.epoch(epoch):
            schedule.step_update(step)
            loss = method.compute_loss(model(x), y, index, inputs=x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            method.after_optimizer_step()
            step += 1
        method.on_epoch_end(epoch)
    return model, method, initial


def same(a, b) -> bool:
    """Equal nested state: tensors by torch.equal (values, dtype, shape), the rest by ==."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same, a, b))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_library_in_a_plain_loop_trains_as_the_framework_bit_for_bit(tmp_path, name):
    hparams, with_dataset = CASES[name]
    cfg = compose_cfg(*SAME, f"method={name}", *(f"method.{k}={v}" for k, v in hparams.items()))
    run(cfg, tmp_path)
    saved = torch.load(tmp_path / "last.pt", weights_only=False)
    model, method, initial = plain_loop(cfg, name, hparams, with_dataset)
    assert saved["global_step"] == 6  # 2 epochs of 3 steps
    ours = model.state_dict()
    assert ours.keys() == saved["model"].keys()
    for key, value in saved["model"].items():  # every parameter and buffer (batch-norm statistics) equal
        assert torch.equal(ours[key], value), key
    assert not any(torch.equal(initial[k], v) for k, v in ours.items() if v.is_floating_point())  # it trained
    assert same(method.state_dict(), saved["method"])  # banks, snapshots, EMA teacher
    assert same(method.rank_state(), saved["rank_states"][0])  # DLB's last batch, the generators' states


def test_the_configuration_is_the_command_lines():
    m = lstsd.method("mean_teacher", num_samples=10, num_classes=3, epochs=36, model=nn.Linear(2, 3))
    assert m.cfg == validate(compose_cfg("method=mean_teacher", "trainer.epochs=36")).method
    assert m.cfg.rampup_epochs == 1  # 5 of 180 epochs, in proportion to the run
    wo_long = lstsd.method("lstsd_wo_long", num_samples=10, num_classes=3, epochs=8, temperature=3)
    assert type(wo_long).__name__ == "LSTSD"
    assert wo_long.cfg.lambda_long == 0
    assert wo_long.cfg.temperature == 3.0
    assert set(wo_long.banks) == {"short"}
    sd = lstsd.method("sd", num_samples=10, num_classes=3, epochs=7, model=nn.Linear(2, 3), minigens=3)
    assert sd.lr_cycles == [3, 2, 2]  # the learning-rate cycles a loop of one's own runs its schedule in


def test_a_method_registered_from_outside_is_built_from_its_schema():
    """No YAML option: the schema's defaults, the keyword hyper-parameters over them, its checks."""
    from dataclasses import dataclass

    import torch.nn.functional as F

    from lstsd.errors import require
    from lstsd.registry import METHODS

    @dataclass
    class ToyConfig(lstsd.MethodConfig):
        epsilon: float = 0.1

        def __post_init__(self) -> None:
            super().__post_init__()
            require(0 <= self.epsilon < 1, "method.epsilon", "a number in [0, 1)", self.epsilon)

    @lstsd.register_method("outside_toy", ToyConfig)
    class Toy(lstsd.Method):
        """Label smoothing by another name."""

        def loss(self, batch, logits):
            ce = F.cross_entropy(logits, batch.y, label_smoothing=self.cfg.epsilon)
            return ce, {"ce": ce}

    try:
        m = lstsd.method("outside_toy", num_samples=4, num_classes=3, epochs=2, epsilon=0.2)
        assert isinstance(m, Toy)
        assert m.cfg == ToyConfig(name="outside_toy", label="outside_toy", epsilon=0.2)
        m.on_epoch_start(0)
        logits, y = torch.randn(2, 3), torch.tensor([0, 2])
        expected = F.cross_entropy(logits, y, label_smoothing=0.2)
        assert torch.equal(m.compute_loss(logits, y, torch.tensor([3, 0])), expected)
        with pytest.raises(lstsd.ConfigError, match=r"method.epsilon=1.5 is invalid: allowed a number in \[0, 1\)"):
            lstsd.method("outside_toy", num_samples=4, num_classes=3, epochs=2, epsilon=1.5)
    finally:
        METHODS.entries.pop("outside_toy", None)


def test_it_composes_inside_another_hydra_application(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    (tmp_path / "config.yaml").write_text("lr: 0.1\n")
    with initialize_config_dir(str(tmp_path), version_base="1.3"):
        m = lstsd.method("lstsd", num_samples=10, num_classes=3, epochs=4, lambda_short=1)
        assert m.cfg.lambda_short == 1.0
        assert GlobalHydra.instance().is_initialized()
        assert compose("config").lr == 0.1  # the application's own configuration is still there


@pytest.mark.parametrize("kwargs,message", [
    (dict(lambda_long=-1), "method.lambda_long=-1.0 is invalid: allowed a number >= 0"),
    (dict(lambda_lon=1), "method.lambda_lon is not a configuration key: did you mean method.lambda_long?"),
    (dict(minigen_epochs="six"), "method.minigen_epochs='six' is invalid: allowed a value of type int"),
    (dict(temperature=float("nan")), "method.temperature=nan is invalid"),
    (dict(num_classes=1), "num_classes=1 is invalid: allowed an integer >= 2"),
    (dict(epochs=0), "epochs=0 is invalid: allowed an integer >= 1"),
    (dict(name="nope"), "method=nope is invalid: allowed one of dlb, kd,"),
    (dict(name="sd"), "method=sd needs the network being trained (model=)"),
    (dict(name="dlb", model=nn.Linear(2, 3)), "method=dlb needs the training set as an lstsd.IndexedDataset"),
    (dict(name="dlb", model=nn.Linear(2, 3), dataset=lstsd.IndexedDataset(TensorDataset(torch.zeros(9, 2))),
          forward="joint"), "method.forward='joint' is invalid: allowed separate in a loop of one's own"),
    (dict(name="dlb", model=nn.Linear(2, 3), dataset=TensorDataset(torch.zeros(10, 2))),
     "dataset= is a TensorDataset: allowed an lstsd.IndexedDataset"),
    (dict(name="dlb", model=nn.Linear(2, 3), dataset=lstsd.IndexedDataset(TensorDataset(torch.zeros(9, 2)))),
     "dataset= holds 9 samples, num_samples=10"),
    (dict(name="lwkd"), "method=lwkd is invalid in a loop of one's own: allowed only through the lstsd trainer"),
])
def test_bad_arguments_are_config_errors_naming_the_key(kwargs, message):
    args = dict(name="lstsd", num_samples=10, num_classes=3, epochs=4) | kwargs
    with pytest.raises(lstsd.ConfigError) as e:
        lstsd.method(args.pop("name"), **args)
    assert message in str(e.value)


def lstsd_method(**hparams):
    return lstsd.method("lstsd", num_samples=6, num_classes=3, epochs=4, minigen_epochs=1, **hparams)


def test_bad_step_input_and_hooks_out_of_order_raise_clear_errors():
    m = lstsd_method()
    logits, y, index = torch.randn(4, 3, requires_grad=True), torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 2, 5])
    with pytest.raises(RuntimeError, match=r"compute_loss\(\) before the first on_epoch_start\(epoch\)"):
        m.compute_loss(logits, y, index)
    with pytest.raises(RuntimeError, match=r"after_optimizer_step\(\) without a compute_loss\(\) before it"):
        m.after_optimizer_step()
    m.on_epoch_start(0)
    bad = [((logits, y, torch.tensor([0, 1, 2, 6])), ValueError, r"sample ids from 0 to 6, expected ids in \[0, 6\)"),
           ((logits, y, torch.tensor([-1, 1, 2, 3])), ValueError, r"sample ids from -1 to 3"),
           ((logits, y, index.float()), TypeError, "index of dtype torch.float32, expected an integer tensor"),
           ((logits, y, index.bool()), TypeError, "index of dtype torch.bool"),
           ((logits, y, [0, 1, 2, 3]), TypeError, "index is a list, expected a tensor"),
           ((logits, y, index[:3]), ValueError, r"index of shape \(3,\), expected \(4,\)"),
           ((torch.randn(4, 5), y, index), ValueError, r"logits of shape \(4, 5\), expected \(batch, 3\)"),
           ((logits, torch.tensor([0, 1, 3, 0]), index), ValueError, r"targets from 0 to 3, expected classes in"),
           ((logits[:0], y[:0], index[:0]), ValueError, "an empty batch")]
    for args, kind, message in bad:
        with pytest.raises(kind, match=message):
            m.compute_loss(*args)
    assert m.pending is None  # nothing was recorded by a refused call
    m.compute_loss(logits, y, index)
    with pytest.raises(RuntimeError, match=r"compute_loss\(\) twice without after_optimizer_step\(\)"):
        m.compute_loss(logits, y, index)
    m.after_optimizer_step()
    post = lstsd.method("lstsd", num_samples=6, num_classes=3, epochs=4, model=nn.Linear(2, 3),
                        bank_source="post_update")
    post.on_epoch_start(0)
    with pytest.raises(ValueError, match=r"needs inputs= \(the batch's inputs"):
        post.compute_loss(logits, y, index)
    kd = lstsd.method("kd", num_samples=6, num_classes=3, epochs=4, teacher=nn.Linear(2, 3))
    kd.on_epoch_start(0)
    with pytest.raises(ValueError, match=r"method kd: compute_loss\(\) needs inputs= \(the batch's inputs: its "
                                         r"teacher runs on them\)"):
        kd.compute_loss(logits, y, index)
    assert torch.isfinite(kd.compute_loss(logits, y, index, inputs=torch.randn(4, 2)))


def test_the_banks_check_their_input_without_a_read_back():
    from lstsd.methods.banks import SampleBank

    bank = SampleBank(6, 3)
    with pytest.raises(ValueError, match=r"rows of shape \(2, 5\) for 2 sample ids: expected \(2, 3\)"):
        bank.write(torch.tensor([0, 1]), torch.zeros(2, 5))
    with pytest.raises(TypeError, match="sample ids of dtype torch.bool"):
        bank.read(torch.tensor([True, False, True, False, True, False]))


def test_compute_loss_writes_the_banks_by_sample_id():
    """The values: the epoch-0 loss is CE, the step writes the logits into the short-term bank under their ids,
    and in epoch 1 the KD term reads them back (Algorithm 1 lines 11 and 14)."""
    m = lstsd_method(lambda_long=0)
    logits, y, index = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 2]), torch.tensor([4, 1])
    m.on_epoch_start(0)
    loss = m.compute_loss(logits, y, index)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item())
    assert set(m.terms) == {"ce"}
    m.after_optimizer_step()
    assert torch.equal(m.banks["short"].read(torch.tensor([1, 4])), logits.flip(0))
    assert m.banks["short"].filled.tolist() == [False, True, False, False, True, False]
    m.on_epoch_end(0)
    m.on_epoch_start(1)
    loss = m.compute_loss(logits, y, index)  # the same logits as their teacher: the KD term is 0
    assert m.terms["kd_short"].item() == pytest.approx(0.0, abs=1e-6)
    assert (loss.item() == pytest.approx(
        m.terms["ce"].item(), rel=1e-6))


def test_indexed_dataset_gives_ids_and_re_reads_reproducibly():
    class Noisy(torch.utils.data.Dataset):  # a random transform drawing from torch's global generator
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return torch.full((2,), float(i)) + torch.rand(2), i % 2

    data = lstsd.IndexedDataset(Noisy())
    x, y, index = next(iter(DataLoader(data, batch_size=5)))
    assert index.dtype == torch.int64
    assert index.tolist() == [0, 1, 2, 3, 4]
    assert y.tolist() == [0, 1, 0, 1, 0]
    state = torch.get_rng_state()
    a = data.get(torch.tensor([3, 1]), torch.Generator().manual_seed(7))
    b = data.get(torch.tensor([3, 1]), torch.Generator().manual_seed(7))
    c = data.get(torch.tensor([3, 1]), torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was
    assert torch.equal(a.x, b.x)
    assert not torch.equal(a.x, c.x)
    assert a.index.tolist() == [3, 1]
    assert a.y.tolist() == [1, 1]
    assert torch.equal(a.x.floor(), torch.tensor([[3.0, 3.0], [1.0, 1.0]]))
    assert data.num_samples == 5
    assert data.augment
    model = nn.Linear(2, 2)
    state = torch.get_rng_state()
    dlb = lstsd.method("dlb", num_samples=5, num_classes=2, epochs=1, model=model, dataset=data)
    assert torch.equal(torch.get_rng_state(), state)
    assert dlb.ctx.info.input_shape == (2,)  # nothing drawn
    with pytest.raises(TypeError, match=r"item 0 of TensorDataset is a tuple of 1, expected an \(input, target\) pair"):
        lstsd.IndexedDataset(TensorDataset(torch.zeros(3, 2)))[0]


def test_import_lstsd_is_light_and_lists_its_api():
    script = "import sys, lstsd; assert not {'torch', 'lightning'} & set(sys.modules); print(lstsd.__all__)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert eval(out.stdout) == ["ConfigError", "IndexedDataset", "Method", "MethodConfig", "method", "register_method"]
    assert lstsd.Method is lstsd.methods.base.Method
    assert lstsd.ConfigError is lstsd.errors.ConfigError
    importers = [f.relative_to(REPO).as_posix() for f in (REPO / "lstsd").rglob("*.py")
                 if re.search(r"^\s*(import|from) (lightning|pytorch_lightning)\b|import_extra\(\"lightning",
                              f.read_text(), re.M)]
    assert importers == ["lstsd/integrations/lightning.py"]  # the library never needs Lightning


def test_the_plain_loop_example_runs():
    """7 epochs: the paper's mini-generations of 6 epochs, so that the last epoch distils."""
    env = {**os.environ, "LSTSD_EXAMPLE_EPOCHS": "7", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    out = subprocess.run([sys.executable, str(REPO / "examples" / "plain_loop.py")], capture_output=True, text=True,
                         timeout=300, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("epoch 7: test accuracy"), out.stdout
    assert float(last.split()[-1].rstrip("%")) > 30, out.stdout
