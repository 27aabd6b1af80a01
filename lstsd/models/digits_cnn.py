"""A small CNN for the 8x8 scikit-learn digits (any channel count, any input of at least 8x8)."""
from __future__ import annotations

from torch import Tensor, nn

from lstsd.config import ModelConfig
from lstsd.registry import register_model


def conv_bn_relu(in_planes: int, out_planes: int) -> list[nn.Module]:
    return [nn.Conv2d(in_planes, out_planes, 3, padding=1, bias=False), nn.BatchNorm2d(out_planes), nn.ReLU(inplace=True)]


class DigitsCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn_relu(in_channels, 32), *conv_bn_relu(32, 64), nn.MaxPool2d(2),
            *conv_bn_relu(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.features(x)))


@register_model("digits_cnn", ModelConfig)
def build_digits_cnn(cfg, num_classes: int, in_channels: int) -> nn.Module:
    return DigitsCNN(num_classes, in_channels, dropout=cfg.dropout)
