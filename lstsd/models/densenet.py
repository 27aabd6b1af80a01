"""DenseNet-BC of Huang et al., "Densely Connected Convolutional Networks" (CVPR 2017), for 32x32 inputs.

Three dense blocks of (depth-4)/6 bottleneck layers (BN-ReLU-1x1 conv to 4k, BN-ReLU-3x3 conv to k,
concatenated to the input), a 3x3 conv stem to 2k channels, compressing transitions
(BN-ReLU-1x1 conv + 2x2 average pooling) and a final BN-ReLU-global-average-pool-linear head.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstsd.config import ModelConfig
from lstsd.errors import ConfigError
from lstsd.registry import register_model


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan-out) convolutions and zero linear biases (He et al. 2015, as the DenseNet code)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)

class Bottleneck(nn.Module):
    def __init__(self, in_planes: int, growth_rate: int, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = F.dropout(out, self.dropout, self.training)
        out = self.conv2(F.relu(self.bn2(out)))
        out = F.dropout(out, self.dropout, self.training)
        return torch.cat([x, out], 1)


class Transition(nn.Sequential):
    def __init__(self, in_planes: int, out_planes: int):
        super().__init__(nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True),
                         nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.AvgPool2d(2))


class DenseNetBC(nn.Module):
    def __init__(self, depth: int = 100, growth_rate: int = 12, compression: float = 0.5,
                 num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError(f"model.depth={depth} is invalid for densenet_bc: expected 6n+4 (40, 100, 190, ...)")
        n = (depth - 4) // 6
        planes = 2 * growth_rate
        layers: list[nn.Module] = [nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)]
        for block in range(3):
            for _ in range(n):
                layers.append(Bottleneck(planes, growth_rate, dropout))
                planes += growth_rate
            if block < 2:
                out_planes = int(math.floor(planes * compression))
                layers.append(Transition(planes, out_planes))
                planes = out_planes
        layers += [nn.BatchNorm2d(planes), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(planes, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


@dataclass
class DenseNetBCConfig(ModelConfig):
    depth: int = 100  # 6n + 4
    growth_rate: int = 12  # k
    compression: float = 0.5  # theta of the transitions


@register_model("densenet_bc", DenseNetBCConfig)
def build_densenet_bc(cfg, num_classes: int, in_channels: int) -> nn.Module:
    return DenseNetBC(cfg.depth, cfg.growth_rate, cfg.compression, num_classes, in_channels,
                      dropout=cfg.dropout)
