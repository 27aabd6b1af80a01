"""The MNIST-1D benchmark's reference models (greydanus/mnist1d, ``notebooks/models.py``), for ``N x C x L``
sequences (MNIST-1D: C = 1, L = 40). ``model.width`` is each model's one size knob.

* ``mnist1d_cnn`` (ConvBase): Conv1d(C, w, 5, stride 2, padding 1), then two Conv1d(w, w, 3, stride 2,
  padding 1), a ReLU after each, flattened, one linear layer (w x 5 = 125 -> 10 at L = 40, w = 25): 5,210
  parameters. Published: 94 % test accuracy.
* ``mnist1d_mlp`` (MLPBase): C L -> h, ReLU; h + ReLU(W h) (a residual layer); -> 10, h = 100 (the models file's
  default; the 2024 train.py builds it with 256): 15,210 parameters. Published: 68 %.
* ``mnist1d_gru`` (GRUBase): a bidirectional GRU with hidden size h = 6 over the L steps (C inputs per step, zero
  initial state), its outputs at every step concatenated (2 h L = 480) into one linear layer: 5,134 parameters.
  Published: 91 %.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor, nn

from lstsd.config import ModelConfig
from lstsd.errors import ConfigError
from lstsd.registry import register_model


def conv_length(length: int, kernel: int, stride: int = 2, padding: int = 1) -> int:
    return (length + 2 * padding - kernel) // stride + 1


class MNIST1DCNN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, length: int, channels: int = 25):
        super().__init__()
        layers, out = [], length
        for i, kernel in enumerate((5, 3, 3)):
            layers += [nn.Conv1d(in_channels if i == 0 else channels, channels, kernel, stride=2, padding=1),
                       nn.ReLU()]
            out = conv_length(out, kernel)
        if out < 1:
            raise ConfigError(f"model=mnist1d_cnn does not fit sequences of length {length}: its three stride-2 "
                              "convolutions need at least 4 steps (dataset.final_seq_length)")
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.linear = nn.Linear(channels * out, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.features(x))


class MNIST1DMLP(nn.Module):
    def __init__(self, num_classes: int, in_features: int, hidden: int = 100):
        super().__init__()
        self.linear1 = nn.Linear(in_features, hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear1(x.flatten(1)).relu()
        h = h + self.linear2(h).relu()
        return self.linear3(h)


class MNIST1DGRU(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, length: int, hidden: int = 6):
        super().__init__()
        self.gru = nn.GRU(in_channels, hidden, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(2 * hidden * length, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.gru(x.transpose(1, 2))  # N x L x C -> N x L x 2h, zero initial state
        return self.linear(out.flatten(1))


def sequence_shape(name: str, input_shape: tuple) -> tuple[int, int]:
    if len(input_shape) != 2:
        raise ConfigError(f"model={name} is invalid for inputs of shape {list(input_shape)}: allowed sequences "
                          "of shape [channels, length] (dataset=mnist1d)")
    return input_shape[0], input_shape[1]


@dataclass
class MNIST1DModelConfig(ModelConfig):
    width: Optional[int] = None  # channels (cnn, null: 25), hidden units (mlp, null: 100), hidden size (gru, null: 6)


@register_model("mnist1d_cnn", MNIST1DModelConfig)
def build_mnist1d_cnn(cfg, num_classes: int, in_channels: int, input_shape: tuple) -> nn.Module:
    channels, length = sequence_shape("mnist1d_cnn", input_shape)
    return MNIST1DCNN(num_classes, channels, length, cfg.width or 25)


@register_model("mnist1d_mlp", MNIST1DModelConfig)
def build_mnist1d_mlp(cfg, num_classes: int, in_channels: int, input_shape: tuple) -> nn.Module:
    channels, length = sequence_shape("mnist1d_mlp", input_shape)
    return MNIST1DMLP(num_classes, channels * length, cfg.width or 100)


@register_model("mnist1d_gru", MNIST1DModelConfig)
def build_mnist1d_gru(cfg, num_classes: int, in_channels: int, input_shape: tuple) -> nn.Module:
    channels, length = sequence_shape("mnist1d_gru", input_shape)
    return MNIST1DGRU(num_classes, channels, length, cfg.width or 6)
