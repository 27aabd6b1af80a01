"""Models from anywhere: ``model._target_=<callable>`` (torchvision, a user's class), ``model=torchvision``,
``model.pretrained=true`` from the local cache offline, and the bad inputs of each (exit 2, one line, nothing
trained)."""
import sys
import textwrap

import pytest
import torch
import torchvision

from helpers import compose_cfg
from lstsd.config import compose, validate
from lstsd.errors import ConfigError
from lstsd.models import build_model
from lstsd.training.run import run

TINY_RGB = ("dataset=synthetic", "dataset.num_train=32", "dataset.num_test=16", "dataset.shape=[3,8,8]",
            "dataset.num_classes=4", "dataset.batch_size=16", "trainer.epochs=1", "trainer.progress=false")
RESNET18_FILE = "resnet18-f37072fd.pth"  # the file torchvision's ResNet18_Weights.IMAGENET1K_V1 is cached as


@pytest.fixture
def weights_cache(tmp_path, monkeypatch):
    """An offline machine whose torch hub cache holds (stand-in) ResNet-18 ImageNet weights: the state_dict of a
    seeded resnet18, under the file name torchvision looks for."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(123)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, folder / RESNET18_FILE)
    return state


def test_model_target_alone_chooses_the_target_option():
    assert compose.prepare(["model._target_=a.b", "seed=1"]) == ["model=target", "model._target_=a.b", "seed=1"]
    assert compose.prepare(["model=resnet20", "model._target_=a.b"]) == ["model=resnet20", "model._target_=a.b"]
    cfg = compose.compose(["model._target_=torchvision.models.resnet18"])
    model = validate(cfg).model
    assert (model.arch, model.name, model._target_) == ("target", "torchvision.models.resnet18",
                                                       "torchvision.models.resnet18")


def test_a_torchvision_model_by_target_trains(tmp_path):
    """torchvision.models.resnet18 on 8x8 synthetic images, one epoch: built by instantiate with num_classes=4."""
    cfg = compose_cfg(*TINY_RGB, "model=target", "model._target_=torchvision.models.resnet18")
    res = run(cfg, tmp_path)
    assert res["status"] == "completed"
    assert res["model"] == "torchvision.models.resnet18"
    state = torch.load(tmp_path / "last.pt", weights_only=False)["model"]
    reference = torchvision.models.resnet18(num_classes=4).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in reference.items()}


def test_a_users_class_by_target_gets_classes_channels_and_kwargs(tmp_path, monkeypatch):
    (tmp_path / "user_nets.py").write_text(textwrap.dedent('''
        from torch import nn


        class TinyNet(nn.Module):
            def __init__(self, classes: int, in_channels: int, width: int = 8):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
                self.head = nn.Linear(width, classes)

            def forward(self, x):
                return self.head(self.body(x))


        def not_a_model(classes: int):
            return [classes]
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    overrides = ["dataset=synthetic", "dataset.num_train=32", "dataset.num_test=16", "dataset.shape=[2,8,8]",
                 "dataset.num_classes=3", "trainer.epochs=1", "trainer.progress=false", "model=target",
                 "model._target_=user_nets.TinyNet", "model.num_classes_key=classes", "model.kwargs={width: 5}",
                 "model.name=tiny"]
    res = run(compose_cfg(*overrides), tmp_path / "run")
    assert res["status"] == "completed"
    assert res["model"] == "tiny"
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["model"]
    assert tuple(state["body.0.weight"].shape) == (5, 2, 3, 3)  # width 5, the data's 2 channels (in_channels: auto)
    assert tuple(state["head.weight"].shape) == (3, 5)  # 3 classes under the keyword "classes"
    with pytest.raises(ConfigError, match=r"model._target_='user_nets.not_a_model' is invalid: allowed a callable "
                                          r"that returns an nn.Module \(it returned list\)"):
        run(compose_cfg(*overrides[:-3], "model._target_=user_nets.not_a_model", "model.num_classes_key=classes"),
            tmp_path / "bad")
    sys.modules.pop("user_nets", None)


def test_torchvision_option_by_name_and_pretrained_from_the_cache_offline(weights_cache):
    """model=torchvision model.name=resnet18 model.pretrained=true: the cached weights, every tensor but the
    classifier (4 classes here, 1,000 in the weights), with no network (HF_HUB_OFFLINE=1)."""
    for overrides in (["model=torchvision", "model.name=resnet18", "model.pretrained=true"],
                      ["model._target_=torchvision.models.resnet18", "model.pretrained=true"]):
        conf = validate(compose.compose([*TINY_RGB, *overrides]))
        model = build_model(conf.model, num_classes=4, input_shape=(3, 8, 8))
        own = model.state_dict()
        for k, v in weights_cache.items():
            if k.startswith("fc."):
                assert own[k].shape[0] == 4
            else:
                assert torch.equal(own[k], v), k
    conf = validate(compose.compose([*TINY_RGB, "model=torchvision", "model.name=resnet101"]))
    assert conf.model.name == "resnet101"
    assert not conf.model.pretrained  # ImageNet's ResNet-101, random init


BAD_MODELS = [
    (["model._target_=nopkg.Net"], "model._target_='nopkg.Net' is invalid: allowed the import path of a callable that "
     "returns an nn.Module (ModuleNotFoundError: No module named 'nopkg')"),
    (["model._target_=torchvision.models.nope"], "model._target_='torchvision.models.nope' is invalid: allowed the "
     "import path of a callable"),
    (["model._target_=math.pi"], "model._target_='math.pi' is invalid: allowed the import path of a callable that "
     "returns an nn.Module (it is a float)"),
    (["model._target_=collections.OrderedDict"], "model._target_='collections.OrderedDict' is invalid: allowed a "
     "callable that returns an nn.Module (it returned OrderedDict)"),
    (["model._target_=torchvision.models.resnet18", "model.kwargs={depth: 3}"], "model._target_="
     "'torchvision.models.resnet18' is invalid: calling it failed (TypeError: "),
    (["model=target"], "model._target_ is missing: the chosen option has no value for it (give model._target_=...)"),
    (["model=torchvision", "model.name=resnet1000"], "model.name='resnet1000' is invalid: allowed a torchvision "
     "classification model: one of alexnet,"),
    (["model=torchvision", "model.pretrained=true", "model.weights=IMAGENET9K"], "model.weights='IMAGENET9K' is "
     "invalid: allowed one of DEFAULT, IMAGENET1K_V1 (the weights of torchvision.models.resnet18)"),
    (["model=torchvision", "model.weights=IMAGENET1K_V1"], "model.weights='IMAGENET1K_V1' is invalid: allowed null "
     "unless model.pretrained=true"),
    (["model=digits_cnn", "model.pretrained=true"], "model.pretrained is not a configuration key"),
    (["model._target_=torch.nn.Linear", "model.num_classes_key=out_features", "model.kwargs={in_features: 3}",
      "model.pretrained=true"], "model.pretrained=true is invalid for model._target_=torch.nn.Linear: it offers no "
     "weights"),
    # pretrained weights that are not in the (empty) cache while offline
    (["model=torchvision", "model.name=resnet34", "model.pretrained=true"], "model.pretrained=true is invalid: "
     "torchvision's ResNet34_Weights.IMAGENET1K_V1 is not in the local cache"),
    (["model=timm", "model.name=resnet18", "model.pretrained=true"], "model.pretrained=true is invalid: the timm "
     "weights of resnet18 are not in the local cache"),
    # an imports module that cannot be imported, or not a list
    (["imports=[nopkg.plugins]"], "imports=['nopkg.plugins'] is invalid: nopkg.plugins cannot be imported "
     "(ModuleNotFoundError: No module named 'nopkg')"),
    (["imports=nopkg"], "imports=nopkg is invalid: allowed a list of modules, imports=[mypkg.plugins]"),
]


@pytest.mark.parametrize("args,fragment", BAD_MODELS)
def test_bad_model_input_exit_2_one_line(tmp_path, monkeypatch, refused, args, fragment):
    import huggingface_hub.constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache, no network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    assert fragment in refused(*TINY_RGB, *args)
