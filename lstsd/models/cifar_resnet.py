"""CIFAR ResNet of He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), Sec. 4.2.

Depth 6n+2 (20/32/44/56/110): a 3x3 conv stem with 16 channels, three stages of n basic blocks with
16/32/64 channels (strides 1/2/2), global average pooling and a linear classifier. Shortcuts use
option A: a parameter-free strided identity zero-padded in channels when the shape changes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from lstsd.config import ModelConfig
from lstsd.errors import ConfigError
from lstsd.registry import register_model


class ShortcutA(nn.Module):
    """Option-A shortcut: subsample spatially by 2 and zero-pad the extra channels (no parameters)."""

    def __init__(self, in_planes: int, planes: int):
        super().__init__()
        self.pad = planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes = stride != 1 or in_planes != planes
        self.shortcut = ShortcutA(in_planes, planes) if changes else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"model.depth={depth} is invalid for cifar_resnet: expected 6n+2 (20, 32, 44, 56, 110, ...)")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@dataclass
class CifarResNetConfig(ModelConfig):
    depth: int = 20  # 6n + 2


@register_model("cifar_resnet", CifarResNetConfig)
def build_cifar_resnet(cfg, num_classes: int, in_channels: int) -> nn.Module:
    return CifarResNet(cfg.depth, num_classes, in_channels)
