"""Architecture checks: exact parameter counts of the papers' models, output shapes, option-A shortcuts."""
from types import SimpleNamespace

import pytest
import torch

from lstsd.models import MODELS, build_model
from lstsd.models.cifar_resnet import ShortcutA


def resnet_cfg(depth):
    return SimpleNamespace(arch="cifar_resnet", depth=depth)


def densenet_cfg(depth=100, growth_rate=12):
    return SimpleNamespace(arch="densenet_bc", depth=depth, growth_rate=growth_rate, compression=0.5, dropout=0.0)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_has_local_architectures():
    assert {"cifar_resnet", "densenet_bc", "digits_cnn"} <= MODELS.keys()


@pytest.mark.parametrize("depth,expected", [
    (20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018), (110, 1_727_962),
])
def test_cifar_resnet_param_counts(depth, expected):
    assert n_params(build_model(resnet_cfg(depth), num_classes=10, input_shape=(3, 32, 32))) == expected


@pytest.mark.parametrize("depth,expected", [(20, 269_722 + 5_850), (110, 1_727_962 + 5_850)])
def test_cifar_resnet_param_counts_100_classes(depth, expected):
    assert n_params(build_model(resnet_cfg(depth), num_classes=100, input_shape=(3, 32, 32))) == expected


def test_densenet_bc_100_k12_param_count():
    assert n_params(build_model(densenet_cfg(), num_classes=100, input_shape=(3, 32, 32))) == 800_032


def test_densenet_bc_190_k40_param_count():
    """Huang et al. (2017), Table 2: DenseNet-BC (L = 190, k = 40) has 25.6M parameters (CIFAR-10 head)."""
    assert n_params(build_model(densenet_cfg(190, 40), num_classes=10, input_shape=(3, 32, 32))) == 25_624_430


@pytest.mark.parametrize("cfg,num_classes", [
    (resnet_cfg(20), 10), (resnet_cfg(20), 100), (densenet_cfg(depth=40), 10), (densenet_cfg(depth=40), 100),
])
def test_cifar_forward_shapes(cfg, num_classes):
    model = build_model(cfg, num_classes=num_classes, input_shape=(3, 32, 32)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, num_classes)


@pytest.mark.parametrize("size", [8, 16])
def test_digits_cnn_forward_shape(size):
    model = build_model(SimpleNamespace(arch="digits_cnn", dropout=0.1), num_classes=10, input_shape=(1, 8, 8)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, size, size)).shape == (2, 10)


def test_option_a_shortcut_is_parameter_free_padded_identity():
    model = build_model(resnet_cfg(20), num_classes=10, input_shape=(3, 32, 32))
    shortcuts = [m for m in model.modules() if isinstance(m, ShortcutA)]
    assert len(shortcuts) == 2  # one at the entry of each downsampling stage
    assert all(n_params(m) == 0 for m in shortcuts)
    x = torch.randn(2, 16, 32, 32)
    out = shortcuts[0](x)
    assert out.shape == (2, 32, 16, 16)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0
    assert out[:, 24:].abs().sum() == 0


@pytest.mark.parametrize("cfg", [resnet_cfg(21), resnet_cfg(2), densenet_cfg(depth=99)])
def test_invalid_depth_raises(cfg):
    with pytest.raises(ValueError, match="model.depth"):
        build_model(cfg, num_classes=10, input_shape=(3, 32, 32))


def test_timm_builds_any_timm_model_by_name():
    import torch

    model = build_model(SimpleNamespace(arch="timm", name="resnet10t", pretrained=False), num_classes=7, input_shape=(1, 32, 32))
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 7)
