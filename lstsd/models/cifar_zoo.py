"""CIFAR versions of common ImageNet architectures, as in the CIFAR tables of DLB (Shen et al., CVPR 2022)
and LW-KD, following the layouts of the widely used pytorch-cifar code and the papers' official CIFAR models.

Every network takes 32x32 inputs with any number of channels, uses a 3x3 stride-1 stem without the
ImageNet max-pool, ends with global average pooling and one linear layer, and is built from
:func:`conv_bn` (conv, batch norm, optional ReLU). Architectures and ``model.*`` keys:

* ``cifar_resnet_v1`` -- He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), ImageNet
  ResNet-18/34 (basic blocks) and -50/101/152 (bottlenecks, stride on the 3x3 conv) with a 3x3 stem of 64
  channels, stages of 64/128/256/512 planes at strides 1/2/2/2 and 1x1-conv + BN projection shortcuts.
  ``depth`` in 18, 34, 50, 101, 152.
* ``vgg`` -- Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition"
  (ICLR 2015), configurations A/B/D/E with batch norm (conv with bias, BN, ReLU; 2x2 max-pools), then a
  single Linear(512, num_classes). ``depth`` in 11, 13, 16, 19.
* ``wide_resnet`` -- Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016), WRN-depth-width:
  a 3x3 stem of 16 channels, three stages of (depth-4)/6 pre-activation wide basic blocks
  (BN-ReLU-conv3x3, dropout ``model.dropout``, BN-ReLU-conv3x3) with 16k/32k/64k channels at strides
  1/2/2, 1x1-conv shortcuts where the shape changes, and a final BN-ReLU. ``depth`` = 6n+4, ``width`` = k.
* ``mobilenetv2_cifar`` -- Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks"
  (CVPR 2018): stride-1 stem of 32 channels and the paper's bottleneck table with the second stage
  (24 channels) at stride 1 instead of 2; every block has its 1x1 expansion conv (also for t=1), and
  stride-1 blocks whose channels change get a 1x1-conv + BN shortcut; a 1x1 conv to 1280 channels ends it.
* ``shufflenetv2_cifar`` -- Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN
  Architecture Design" (ECCV 2018), 1.0x: 3x3 stem of 24 channels (no max-pool), stages of 116/232/464
  channels each a stride-2 down-sampling unit followed by 3/7/3 channel-split units, then 1x1 conv to 1024.
* ``googlenet_cifar`` -- Szegedy et al., "Going Deeper with Convolutions" (CVPR 2015): a 3x3 stem of 192
  channels and inception modules 3a-3b, 4a-4e, 5a-5b of the paper's Table 1 (max-pools after 3b and 4e;
  the 5x5 branch as two 3x3 convs; every conv with bias and BN), no auxiliary heads.
* ``densenet_cifar`` -- Huang et al., "Densely Connected Convolutional Networks" (CVPR 2017),
  DenseNet-121/169/201: a 3x3 stem of 2k channels, four dense blocks of 6/12/24/16 (32/32, 48/32 for 169,
  201) bottleneck layers, transitions with reduction 0.5. ``depth`` in 121, 169, 201, ``growth_rate`` = k
  (32 by default), ``dropout`` after each conv.
* ``resnext_cifar`` -- Xie et al., "Aggregated Residual Transformations for Deep Neural Networks"
  (CVPR 2017), Sec. 5.3 CIFAR networks ResNeXt-depth-CxDd: a 3x3 stem of 64 channels, three stages of
  (depth-2)/9 bottleneck blocks at strides 1/2/2 with outputs 256/512/1024 and grouped-conv widths
  C*d, 2*C*d, 4*C*d (1x1 reduce, 3x3 conv in C groups, 1x1 expand; 1x1-conv + BN projection shortcuts
  where the shape changes). ``width`` is the bottleneck width d of one group in the first stage (the
  "64d") and ``cardinality`` the number of groups C (the "8x").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstsd.config import ModelConfig
from lstsd.errors import require
from lstsd.models.densenet import Bottleneck as DenseLayer, Transition, init_weights
from lstsd.registry import register_model


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, bias: bool = False,
            relu: bool = True) -> nn.Sequential:
    """k x k conv ('same' padding) -> BatchNorm -> optional ReLU."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """Identity, or a 1x1-conv + BN projection where the shape changes."""
    return conv_bn(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else nn.Identity()


class Classifier(nn.Sequential):
    """Features, global average pooling and a linear layer, with Kaiming-initialised convs."""

    def __init__(self, features: nn.Module, planes: int, num_classes: int):
        super().__init__()
        self.features = features
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(planes, num_classes)
        init_weights(self)


def _opt(cfg, key: str, default=None):
    value = getattr(cfg, key, None)
    return default if value is None else value


# --------------------------------------------------------------------------- ResNet (He et al. 2016)
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, planes, 3, stride), conv_bn(planes, planes, relu=False))
        self.shortcut = shortcut(cin, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class BottleneckBlock(BasicBlock):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        nn.Module.__init__(self)
        self.body = nn.Sequential(conv_bn(cin, planes, 1), conv_bn(planes, planes, 3, stride),
                                  conv_bn(planes, 4 * planes, 1, relu=False))
        self.shortcut = shortcut(cin, 4 * planes, stride)


RESNET_V1 = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (BottleneckBlock, (3, 4, 6, 3)),
             101: (BottleneckBlock, (3, 4, 23, 3)), 152: (BottleneckBlock, (3, 8, 36, 3))}


@dataclass
class DepthConfig(ModelConfig):
    """An architecture with one size knob, its depth."""
    depth: Optional[int] = None


@dataclass
class WidthConfig(DepthConfig):
    """Depth and width: a WRN's widening factor k, a VGG head's hidden width (null: one linear layer)."""
    width: Optional[int] = None


@dataclass
class DenseNetCifarConfig(DepthConfig):
    growth_rate: Optional[int] = None  # null: 32


@dataclass
class ResNeXtConfig(WidthConfig):
    cardinality: Optional[int] = None  # groups of a block; null: 8 (width null: 64, the base width)


@register_model("cifar_resnet_v1", DepthConfig)
def build_resnet_v1(cfg, num_classes: int, in_channels: int) -> nn.Module:
    depth = _opt(cfg, "depth")
    require(depth in RESNET_V1, "model.depth", "one of 18, 34, 50, 101, 152", depth)
    block, counts = RESNET_V1[depth]
    layers, cin = [conv_bn(in_channels, 64)], 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), counts)):
        for j in range(n):
            layers.append(block(cin, planes, 2 if i > 0 and j == 0 else 1))
            cin = planes * block.expansion
    return Classifier(nn.Sequential(*layers), cin, num_classes)


# --------------------------------------------------------------------------- VGG (Simonyan & Zisserman 2015)
VGG = {11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
       13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
       16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
       19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]}


@register_model("vgg", WidthConfig)
def build_vgg(cfg, num_classes: int, in_channels: int) -> nn.Module:
    """``model.width`` null: one linear layer on the pooled 512 features (pytorch-cifar); a width w: the original
    VGG head, two hidden layers of w with ReLU and dropout (``model.dropout``), 512 -> w -> w -> K (w = 4096: the
    ~39 M parameters LW-KD's Table 3 reports for VGG-19)."""
    depth, width = _opt(cfg, "depth"), _opt(cfg, "width")
    require(depth in VGG, "model.depth", "one of 11, 13, 16, 19", depth)
    require(width is None or width >= 1, "model.width", "null or an integer >= 1 (the head's hidden width)", width)
    layers, cin = [], in_channels
    for v in VGG[depth]:
        layers.append(nn.MaxPool2d(2) if v == "M" else conv_bn(cin, v, bias=True))
        cin = cin if v == "M" else v
    model = Classifier(nn.Sequential(*layers), 512, num_classes)
    if width is not None:
        drop = _opt(cfg, "dropout", 0.0)
        model.fc = nn.Sequential(nn.Linear(512, width), nn.ReLU(inplace=True), nn.Dropout(drop),
                                 nn.Linear(width, width), nn.ReLU(inplace=True), nn.Dropout(drop),
                                 nn.Linear(width, num_classes))
    return model


# --------------------------------------------------------------------------- Wide ResNet (Zagoruyko & Komodakis 2016)
class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        o = F.relu(self.bn1(x))  # the pre-activation also feeds a projection shortcut
        y = F.dropout(self.conv1(o), self.dropout, self.training)
        y = self.conv2(F.relu(self.bn2(y)))
        return y + (x if self.shortcut is None else self.shortcut(o))


@register_model("wide_resnet", WidthConfig)
def build_wide_resnet(cfg, num_classes: int, in_channels: int) -> nn.Module:
    depth, k = _opt(cfg, "depth"), _opt(cfg, "width")
    require(isinstance(depth, int) and depth >= 10 and (depth - 4) % 6 == 0, "model.depth",
            "6n+4 with n >= 1 (10, 16, 22, 28, 40, ...)", depth)
    require(isinstance(k, int) and k >= 1, "model.width", "an integer >= 1 (the widening factor k)", k)
    layers, cin = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)], 16
    for planes, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
        for j in range((depth - 4) // 6):
            layers.append(WideBlock(cin, planes, stride if j == 0 else 1, _opt(cfg, "dropout", 0.0)))
            cin = planes
    layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)]
    return Classifier(nn.Sequential(*layers), cin, num_classes)


# --------------------------------------------------------------------------- MobileNetV2 (Sandler et al. 2018)
class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int):
        super().__init__()
        mid = expansion * cin
        self.body = nn.Sequential(conv_bn(cin, mid, 1), conv_bn(mid, mid, 3, stride, groups=mid),
                                  conv_bn(mid, cout, 1, relu=False))
        self.shortcut = shortcut(cin, cout, 1) if stride == 1 else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return y if self.shortcut is None else y + self.shortcut(x)


# (expansion t, channels c, blocks n, stride s) -- the paper's Table 2, second stage at stride 1 for CIFAR
MOBILENETV2 = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


@register_model("mobilenetv2_cifar", ModelConfig)
def build_mobilenetv2(cfg, num_classes: int, in_channels: int) -> nn.Module:
    layers, cin = [conv_bn(in_channels, 32)], 32
    for t, c, n, s in MOBILENETV2:
        for j in range(n):
            layers.append(InvertedResidual(cin, c, t, s if j == 0 else 1))
            cin = c
    layers.append(conv_bn(cin, 1280, 1))
    return Classifier(nn.Sequential(*layers), 1280, num_classes)


# --------------------------------------------------------------------------- ShuffleNetV2 (Ma et al. 2018)
def channel_shuffle(x: Tensor, groups: int = 2) -> Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """Stride 1: split the channels, transform one half (1x1, 3x3 depthwise, 1x1), concatenate and shuffle.
    Stride 2: both halves see the whole input (left: 3x3 depthwise + 1x1; right as above) and halve H, W."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        half, cin_right = cout // 2, cin if stride == 2 else cin // 2
        self.stride = stride
        self.left = nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin, relu=False),
                                  conv_bn(cin, half, 1)) if stride == 2 else None
        self.right = nn.Sequential(conv_bn(cin_right, half, 1), conv_bn(half, half, 3, stride, groups=half, relu=False),
                                   conv_bn(half, half, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 2:
            out = torch.cat([self.left(x), self.right(x)], 1)
        else:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.right(x2)], 1)
        return channel_shuffle(out)


@register_model("shufflenetv2_cifar", ModelConfig)
def build_shufflenetv2(cfg, num_classes: int, in_channels: int) -> nn.Module:
    layers, cin = [conv_bn(in_channels, 24)], 24
    for cout, n in ((116, 3), (232, 7), (464, 3)):  # 1.0x widths; one down-sampling unit + n units per stage
        layers += [ShuffleUnit(cin, cout, 2)] + [ShuffleUnit(cout, cout, 1) for _ in range(n)]
        cin = cout
    layers.append(conv_bn(cin, 1024, 1))
    return Classifier(nn.Sequential(*layers), 1024, num_classes)


# --------------------------------------------------------------------------- GoogLeNet (Szegedy et al. 2015)
class Inception(nn.Module):
    def __init__(self, cin: int, n1: int, n3r: int, n3: int, n5r: int, n5: int, npool: int):
        super().__init__()
        self.branches = nn.ModuleList([
            conv_bn(cin, n1, 1, bias=True),
            nn.Sequential(conv_bn(cin, n3r, 1, bias=True), conv_bn(n3r, n3, bias=True)),
            nn.Sequential(conv_bn(cin, n5r, 1, bias=True), conv_bn(n5r, n5, bias=True), conv_bn(n5, n5, bias=True)),
            nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(cin, npool, 1, bias=True)),
        ])

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) of the paper's Table 1; "M" = 3x3/2 max-pool
GOOGLENET = [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",
             (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
             (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M",
             (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)]


@register_model("googlenet_cifar", ModelConfig)
def build_googlenet(cfg, num_classes: int, in_channels: int) -> nn.Module:
    layers, cin = [conv_bn(in_channels, 192, bias=True)], 192
    for spec in GOOGLENET:
        if spec == "M":
            layers.append(nn.MaxPool2d(3, 2, 1))
        else:
            layers.append(Inception(cin, *spec))
            cin = spec[0] + spec[2] + spec[4] + spec[5]
    return Classifier(nn.Sequential(*layers), cin, num_classes)


# --------------------------------------------------------------------------- DenseNet (Huang et al. 2017)
DENSENET = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}


@register_model("densenet_cifar", DenseNetCifarConfig)
def build_densenet_cifar(cfg, num_classes: int, in_channels: int) -> nn.Module:
    depth = _opt(cfg, "depth")
    require(depth in DENSENET, "model.depth", "one of 121, 169, 201", depth)
    k = _opt(cfg, "growth_rate", 32)
    require(isinstance(k, int) and k >= 1, "model.growth_rate", "an integer >= 1", k)
    layers, planes = [nn.Conv2d(in_channels, 2 * k, 3, 1, 1, bias=False)], 2 * k
    for i, n in enumerate(DENSENET[depth]):
        for _ in range(n):
            layers.append(DenseLayer(planes, k, _opt(cfg, "dropout", 0.0)))
            planes += k
        if i < 3:
            layers.append(Transition(planes, planes // 2))
            planes //= 2
    layers += [nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]
    return Classifier(nn.Sequential(*layers), planes, num_classes)


# --------------------------------------------------------------------------- ResNeXt (Xie et al. 2017)
class ResNeXtBlock(BasicBlock):
    def __init__(self, cin: int, cout: int, group_width: int, cardinality: int, stride: int):
        nn.Module.__init__(self)
        self.body = nn.Sequential(conv_bn(cin, group_width, 1),
                                  conv_bn(group_width, group_width, 3, stride, groups=cardinality),
                                  conv_bn(group_width, cout, 1, relu=False))
        self.shortcut = shortcut(cin, cout, stride)


@register_model("resnext_cifar", ResNeXtConfig)
def build_resnext_cifar(cfg, num_classes: int, in_channels: int) -> nn.Module:
    depth, d, c = _opt(cfg, "depth"), _opt(cfg, "width", 64), _opt(cfg, "cardinality", 8)
    require(isinstance(depth, int) and depth >= 11 and (depth - 2) % 9 == 0, "model.depth",
            "9n+2 with n >= 1 (11, 20, 29, ...)", depth)
    require(isinstance(d, int) and d >= 1, "model.width", "an integer >= 1 (bottleneck width d per group)", d)
    require(isinstance(c, int) and c >= 1, "model.cardinality", "an integer >= 1", c)
    layers, cin = [conv_bn(in_channels, 64)], 64
    for i, (cout, stride) in enumerate(((256, 1), (512, 2), (1024, 2))):
        for j in range((depth - 2) // 9):
            layers.append(ResNeXtBlock(cin, cout, c * d * 2 ** i, c, stride if j == 0 else 1))
            cin = cout
    return Classifier(nn.Sequential(*layers), cin, num_classes)
