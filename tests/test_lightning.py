"""The Lightning callback (lstsd.integrations.lightning.Distillation): a LightningModule fitted with it trains bit
for bit as the same method in a plain loop, its state travels in Lightning's checkpoints (a resumed fit equals an
uninterrupted one), its extra models are evaluated, and the Lightning example runs end to end."""
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import lstsd
from helpers import REPO

L = pytest.importorskip("lightning")
from lstsd.integrations.lightning import Distillation  # noqa: E402

N, C = 48, 3


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread is the fastest


def data():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, C, (N,), generator=g)
    x = torch.randn(N, 6, generator=g) + nn.functional.one_hot(y, 6).float() * 2
    return lstsd.IndexedDataset(TensorDataset(x, y), augment=False)


def loader(train):
    """An order drawn from (seed, epoch): Lightning sets the sampler's epoch, so a resumed fit draws the same."""
    sampler = DistributedSampler(train, num_replicas=1, rank=0, shuffle=True, seed=0)
    return DataLoader(train, batch_size=16, sampler=sampler)


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, C))


class Module(L.LightningModule):
    def __init__(self, net, distillation):
        super().__init__()
        self.net, self.distillation = net, distillation

    def training_step(self, batch, batch_idx):
        x, y, index = batch
        return self.distillation.method.compute_loss(self.net(x), y, index, inputs=x)

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.net.parameters(), lr=0.1, momentum=0.9)


def fit(tmp_path, distillation, model, epochs, ckpt=None, val=None):
    trainer = L.Trainer(max_epochs=epochs, callbacks=[distillation], accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(Module(model, distillation), loader(data()), val, ckpt_path=ckpt)
    return trainer


def plain(name, epochs, **hparams):
    train, model = data(), net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    method = lstsd.method(name, num_samples=N, num_classes=C, epochs=epochs, model=model, **hparams)
    batches = loader(train)
    for epoch in range(epochs):
        batches.sampler.set_epoch(epoch)
        method.on_epoch_start(epoch)
        for x, y, index in batches:
            loss = method.compute_loss(model(x), y, index, inputs=x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            method.after_optimizer_step()
        method.on_epoch_end(epoch)
    return model, method


def test_the_callback_trains_as_a_plain_loop_and_evaluates_the_ema_teacher(tmp_path):
    model = net()
    distillation = Distillation("mean_teacher", num_samples=N, num_classes=C, model=model, decay=0.8,
                                rampup_epochs=0)
    val = DataLoader(TensorDataset(data().dataset.tensors[0], data().dataset.tensors[1]), batch_size=N)
    trainer = fit(tmp_path, distillation, model, 2, val=val)
    reference, method = plain("mean_teacher", 2, decay=0.8, rampup_epochs=0)
    for (key, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), key
    ema = distillation.method.teacher
    for (key, a), b in zip(ema.state_dict().items(), method.teacher.state_dict().values()):
        assert torch.equal(a, b), key
    assert distillation.method.updates == method.updates == 6  # an EMA update after each of the 2 x 3 steps
    x, y = val.dataset.tensors
    with torch.no_grad():
        accuracy = 100.0 * (ema(x).argmax(1) == y).float().mean().item()
    assert trainer.callback_metrics["ema_val_acc"].item() == pytest.approx(accuracy)


def test_a_resumed_fit_equals_an_uninterrupted_one(tmp_path):
    """LSTSD distils from the banks of the first epoch in the second: they must travel in the checkpoint."""
    whole = net()
    fit(tmp_path / "a", Distillation("lstsd", num_samples=N, num_classes=C, minigen_epochs=1), whole, 2)
    first = fit(tmp_path / "b", Distillation("lstsd", num_samples=N, num_classes=C, minigen_epochs=1), net(), 1)
    first.save_checkpoint(tmp_path / "one.ckpt")
    resumed_net, resumed = net(), Distillation("lstsd", num_samples=N, num_classes=C, minigen_epochs=1)
    fit(tmp_path / "c", resumed, resumed_net, 2, ckpt=tmp_path / "one.ckpt")
    assert resumed.method.banks["short"].filled.all()
    for (key, a), b in zip(whole.state_dict().items(), resumed_net.state_dict().values()):
        assert torch.equal(a, b), key
    cold_net = net()  # without the banks the second epoch distils from zeros: other weights
    cold = Distillation("lstsd", num_samples=N, num_classes=C, minigen_epochs=1)
    ckpt = torch.load(tmp_path / "one.ckpt", weights_only=False)
    ckpt["callbacks"] = {}
    torch.save(ckpt, tmp_path / "cold.ckpt")
    fit(tmp_path / "d", cold, cold_net, 2, ckpt=tmp_path / "cold.ckpt")
    assert not all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), cold_net.state_dict().values()))


def test_the_callback_refuses_misuse(tmp_path):
    distillation = Distillation("lstsd", num_samples=N, num_classes=C)
    with pytest.raises(RuntimeError, match=r"is built when Trainer.fit starts"):
        distillation.method
    trainer = L.Trainer(max_epochs=1, accumulate_grad_batches=2, callbacks=[distillation], accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(lstsd.ConfigError, match="accumulate_grad_batches=2 is invalid: allowed 1"):
        trainer.fit(Module(net(), distillation), loader(data()))


def test_the_lightning_example_runs():
    env = {**os.environ, "LSTSD_EXAMPLE_EPOCHS": "2", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    out = subprocess.run([sys.executable, str(REPO / "examples" / "lightning_callback.py")], capture_output=True,
                         text=True, timeout=300, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("epoch 2: test accuracy"), out.stdout
    assert "EMA teacher" in last and "the average of about the last 1000 steps, of 80 so far" in last, out.stdout


def test_without_lightning_the_import_names_the_extra(monkeypatch):
    """The module imports Lightning; where it is not installed (hidden here), importing it says which extra to
    install, as an ImportError."""
    for name in [m for m in sys.modules if m == "lightning" or m.startswith("lightning.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "lstsd.integrations.lightning")
    with pytest.raises(ImportError, match=r"needs the lightning extra \(lightning\), which is not "
                                          r"installed: pip install -e '.\[lightning\]'"):
        import lstsd.integrations.lightning  # noqa: F401
