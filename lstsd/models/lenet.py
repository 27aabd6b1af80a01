"""LeNet-5 and LeNetW, the lightweight teachers of LW-KD (its Tables 9 and 10).

``lenet5`` (LeCun et al. 1998, LW-KD Table 9) for 28 x 28 inputs: 5x5 conv, 6 maps (padding 2), ReLU, 2x2 max
pool -> 14 x 14; 5x5 conv, 16 maps, ReLU, max pool -> 5 x 5; 5x5 conv, 120 maps, ReLU -> 1 x 1; FC 84 (ReLU);
FC K. 61,706 parameters at K = 10 (the paper's ~61.7K) and 69,356 at K = 100 (~69.4K).

``lenetw`` (LW-KD Table 10), the wide variant for CIFAR: 3x3 conv, 64 maps, ReLU -> 30 x 30; 3x3 conv, 128 maps,
ReLU, max pool -> 14 x 14; FC 1024, ReLU, dropout (``model.dropout``, 0.5 by its config); FC K.
"""
from __future__ import annotations

from torch import nn

from lstsd.config import ModelConfig
from lstsd.registry import register_model


@register_model("lenet5", ModelConfig)
def build_lenet5(cfg, num_classes: int, in_channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(16, 120, 5), nn.ReLU(inplace=True), nn.Flatten(),
        nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes),
    )


@register_model("lenetw", ModelConfig)
def build_lenetw(cfg, num_classes: int, in_channels: int) -> nn.Module:
    side = (32 - 4) // 2  # 32 x 32 inputs
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 3), nn.ReLU(inplace=True),
        nn.Conv2d(64, 128, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(128 * side * side, 1024), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout),
        nn.Linear(1024, num_classes),
    )
