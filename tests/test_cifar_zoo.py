"""CIFAR model zoo (lstsd.models.cifar_zoo): exact parameter counts, forward shapes, configs, depth errors."""
from types import SimpleNamespace

import pytest
import torch

from helpers import compose_cfg
from lstsd.config import validate
from lstsd.errors import ConfigError
from lstsd.models import build_model

CFGS = {  # config file -> the model keys it sets
    "resnet18": dict(arch="cifar_resnet_v1", depth=18),
    "resnet34": dict(arch="cifar_resnet_v1", depth=34),
    "resnet50": dict(arch="cifar_resnet_v1", depth=50),
    "vgg16": dict(arch="vgg", depth=16),
    "vgg19": dict(arch="vgg", depth=19),
    "vgg19_4096": dict(arch="vgg", depth=19, width=4096, dropout=0.5),
    "wrn16_2": dict(arch="wide_resnet", depth=16, width=2),
    "wrn28_10": dict(arch="wide_resnet", depth=28, width=10),
    "mobilenetv2": dict(arch="mobilenetv2_cifar"),
    "shufflenetv2": dict(arch="shufflenetv2_cifar"),
    "googlenet": dict(arch="googlenet_cifar"),
    "densenet121": dict(arch="densenet_cifar", depth=121, growth_rate=32),
    "resnext29": dict(arch="resnext_cifar", depth=29, width=64, cardinality=8),
}

# (10 classes, 100 classes). Published: ResNet-18 11.17M (pytorch-cifar), WRN-16-2 0.7M and WRN-28-10 36.5M
# (Zagoruyko & Komodakis, Table 2/4), ResNeXt-29 8x64d 34.4M (Xie et al., Table 7).
COUNTS = {
    "resnet18": (11_173_962, 11_220_132),
    "resnet34": (21_282_122, 21_328_292),
    "resnet50": (23_520_842, 23_705_252),
    "vgg16": (14_728_266, 14_774_436),
    "vgg19": (20_040_522, 20_086_692),
    "vgg19_4096": (38_958_922, 39_327_652),  # LW-KD Table 3: ~39.0 M / ~39.3 M
    "wrn16_2": (691_674, 703_284),
    "wrn28_10": (36_479_194, 36_536_884),
    "mobilenetv2": (2_296_922, 2_412_212),
    "shufflenetv2": (1_263_854, 1_356_104),
    "googlenet": (6_166_250, 6_258_500),
    "densenet121": (6_956_298, 7_048_548),
    "resnext29": (34_426_698, 34_518_948),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny forward passes: one intra-op thread avoids OpenMP stalls when the 2 cores are busy elsewhere."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cfg(name, **overrides):
    keys = {"depth": None, "width": None, "growth_rate": None, "cardinality": None, "dropout": 0.0, "name": name}
    return SimpleNamespace(**{**keys, **CFGS[name], **overrides})


def n_params(name, num_classes, **overrides):
    with torch.device("meta"):  # counts only: no memory, no initialisation cost
        model = build_model(cfg(name, **overrides), num_classes=num_classes, input_shape=(3, 32, 32))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", CFGS)
def test_zoo_param_counts(name):
    assert (n_params(name, 10), n_params(name, 100)) == COUNTS[name]


@pytest.mark.parametrize("name", CFGS)
def test_zoo_config_composes_builds_and_runs(name):
    model_cfg = validate(compose_cfg(f"model={name}")).model
    assert model_cfg.name == name
    assert {k: getattr(model_cfg, k) for k in CFGS[name]} == CFGS[name]
    model = build_model(model_cfg, num_classes=10, input_shape=(3, 32, 32)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet18", "wrn16_2", "shufflenetv2"])
def test_zoo_any_in_channels(name):
    model = build_model(cfg(name), num_classes=100, input_shape=(1, 32, 32)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 100)


def test_zoo_wrn_dropout_is_active_in_training_only():
    model = build_model(cfg("wrn16_2", dropout=0.5), num_classes=10, input_shape=(3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name,overrides,key", [
    ("resnet18", dict(depth=20), "model.depth"), ("vgg16", dict(depth=17), "model.depth"),
    ("wrn28_10", dict(depth=27), "model.depth"), ("wrn28_10", dict(width=0), "model.width"),
    ("densenet121", dict(depth=100), "model.depth"), ("resnext29", dict(depth=30), "model.depth"),
])
def test_zoo_bad_depth_names_the_key(name, overrides, key):
    with pytest.raises(ConfigError, match=rf"^{key}=\S+ is invalid: allowed ") as err:
        build_model(cfg(name, **overrides), num_classes=10, input_shape=(3, 32, 32))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["mobilenetv2", "shufflenetv2", "googlenet"])
def test_fixed_depth_architectures_have_no_depth_key(name):
    """Their schema has no ``depth``: setting one is refused while composing, naming the key."""
    from lstsd.errors import one_line

    with pytest.raises(Exception) as err:
        compose_cfg(f"model={name}", "model.depth=50")
    assert "model.depth" in one_line(err.value)
    assert "\n" not in one_line(err.value)


def test_zoo_bad_depth_from_the_command_line_config():
    conf = validate(compose_cfg("model=wrn28_10", "model.depth=30"))
    with pytest.raises(ConfigError, match=r"^model\.depth=30 is invalid: allowed 6n\+4"):
        build_model(conf.model, num_classes=10, input_shape=(3, 32, 32))
