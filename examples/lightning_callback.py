"""Mean Teacher on a LightningModule with the lstsd callback, on MNIST-1D:
python examples/lightning_callback.py (LSTSD_EXAMPLE_EPOCHS=2 for a quick run; needs the lightning extra:
pip install -e '.[lightning]').

The callback builds the method when fitting starts and calls its hooks; the module's training_step returns the
method's loss. The EMA teacher is evaluated beside the student (ema_val_acc).
"""
import os

import lightning as L
import torch
from mnist1d.data import get_dataset_args, make_dataset
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lstsd
from lstsd.integrations.lightning import Distillation


class Classifier(L.LightningModule):
    def __init__(self, net: nn.Module, distillation: Distillation):
        super().__init__()
        self.net, self.distillation = net, distillation

    def training_step(self, batch, batch_idx):
        x, y, index = batch
        loss = self.distillation.method.compute_loss(self.net(x), y, index, inputs=x)  # CE + w(e) consistency
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", 100.0 * (self.net(x).argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=1e-2)


if __name__ == "__main__":
    epochs = int(os.environ.get("LSTSD_EXAMPLE_EPOCHS", 200))
    L.seed_everything(0)
    data = make_dataset(get_dataset_args())  # 4,000 training and 1,000 test sequences of length 40, 10 classes
    x, x_test = (torch.tensor(data[k], dtype=torch.float32).unsqueeze(1) for k in ("x", "x_test"))
    y, y_test = torch.tensor(data["y"]), torch.tensor(data["y_test"])
    train = lstsd.IndexedDataset(TensorDataset(x, y), augment=False)  # items (input, target, sample id)
    net = nn.Sequential(nn.Conv1d(1, 25, 5, stride=2, padding=1), nn.ReLU(), nn.Conv1d(25, 25, 3, stride=2, padding=1),
                        nn.ReLU(), nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(125, 10))
    distillation = Distillation("mean_teacher", num_samples=len(train), num_classes=10, model=net)
    trainer = L.Trainer(max_epochs=epochs, callbacks=[distillation], accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
    trainer.fit(Classifier(net, distillation), DataLoader(train, batch_size=100, shuffle=True),
                DataLoader(TensorDataset(x_test, y_test), batch_size=1000))
    m, decay = trainer.callback_metrics, distillation.method.cfg.decay
    # the EMA teacher averages the weights of about the last 1 / (1 - decay) steps: a short run's is still near
    # its initial weights, so it trails the student until the run is several times that long
    print(f"epoch {epochs}: test accuracy {m['val_acc']:.2f}% (EMA teacher {m['ema_val_acc']:.2f}%: the average "
          f"of about the last {1 / (1 - decay):.0f} steps, of {trainer.global_step} so far)")
