"""LSTSD in a plain PyTorch loop on MNIST-1D: python examples/plain_loop.py (LSTSD_EXAMPLE_EPOCHS=2 for a quick run).

The MNIST-1D benchmark's reference CNN and recipe (Adam at 1e-2, batches of 100), LSTSD with the paper's settings.
"""
import os

import torch
from mnist1d.data import get_dataset_args, make_dataset
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lstsd

epochs = int(os.environ.get("LSTSD_EXAMPLE_EPOCHS", 200))
torch.manual_seed(0)
data = make_dataset(get_dataset_args())  # 4,000 training and 1,000 test sequences of length 40, 10 classes
x, x_test = (torch.tensor(data[k], dtype=torch.float32).unsqueeze(1) for k in ("x", "x_test"))
y, y_test = torch.tensor(data["y"]), torch.tensor(data["y_test"])
train = lstsd.IndexedDataset(TensorDataset(x, y), augment=False)  # items (input, target, sample id)
loader = DataLoader(train, batch_size=100, shuffle=True)
model = nn.Sequential(nn.Conv1d(1, 25, 5, stride=2, padding=1), nn.ReLU(), nn.Conv1d(25, 25, 3, stride=2, padding=1),
                      nn.ReLU(), nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(125, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
method = lstsd.method("lstsd", num_samples=len(train), num_classes=10, epochs=epochs)  # lambda_long=2.4, ...

for epoch in range(epochs):
    model.train()
    method.on_epoch_start(epoch)
    for inputs, targets, index in loader:
        loss = method.compute_loss(model(inputs), targets, index)  # CE + the long- and short-term KD terms
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_optimizer_step()  # writes this batch's predictions into the per-sample banks
    method.on_epoch_end(epoch)
    with torch.no_grad():
        accuracy = (model.eval()(x_test).argmax(1) == y_test).float().mean().item()
    if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
        print(f"epoch {epoch + 1}: test accuracy {100 * accuracy:.2f}%")
