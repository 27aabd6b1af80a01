"""Teachers from outside the framework's runs, for KD and LW-KD: a checkpoint file (a state_dict or a whole module)
for the model config of ``method.teacher_model`` (any form the student's takes, ``_target_`` included),
pretrained weights by name, and the teacher a caller gives (``run(cfg, teacher=...)``); the class count checked
against the student's, and the bad inputs (exit 2, one line, nothing trained)."""

import pytest
import torch
import torchvision

from helpers import built_method, compose_cfg
from lstsd.errors import ConfigError
from lstsd.models.lenet import build_lenet5
from lstsd.models.digits_cnn import DigitsCNN
from lstsd.training.run import run

RGB = ("dataset=synthetic", "dataset.num_train=32", "dataset.num_test=16", "dataset.shape=[3,8,8]",
       "dataset.num_classes=4", "dataset.batch_size=16", "trainer.epochs=1", "trainer.progress=false",
       "model=digits_cnn")


def build(*overrides, run_dir, teacher=None):
    """The method object of a run (the method is built, nothing trained)."""
    return built_method(overrides, run_dir, teacher)


def same_weights(module, state) -> bool:
    own = module.state_dict()
    return own.keys() == state.keys() and all(torch.equal(own[k].cpu(), state[k]) for k in state)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Teacher files: DigitsCNN state_dicts of 4 and 7 classes (3 channels), the whole 4-class module, a
    torchvision ResNet-18 of 4 classes (state_dict and whole module), LeNet-5 state_dicts of 4 and 10 classes."""
    d = tmp_path_factory.mktemp("teachers")
    torch.manual_seed(7)
    out = {"cnn4": DigitsCNN(4, 3), "cnn7": DigitsCNN(7, 3), "r18": torchvision.models.resnet18(num_classes=4),
           "lenet4": build_lenet5(None, 4, 1), "lenet10": build_lenet5(None, 10, 1)}
    for name, module in out.items():
        torch.save(module.state_dict(), d / f"{name}.pt")
    torch.save(out["cnn4"], d / "cnn4_module.pt")
    torch.save(out["r18"], d / "r18_module.pt")
    torch.save({"model": out["cnn4"].state_dict(), "epoch": 3}, d / "cnn4_last.pt")  # an lstsd checkpoint's layout
    return d, {k: v.state_dict() for k, v in out.items()}


def test_kd_from_a_state_dict_of_the_students_architecture(files, tmp_path):
    d, states = files
    kd = build(*RGB, "method=kd", f"method.teacher_checkpoint={d / 'cnn4.pt'}", run_dir=tmp_path / "a")
    assert same_weights(kd.teacher, states["cnn4"])
    assert not kd.teacher.training
    assert not any(p.requires_grad for p in kd.teacher.parameters())
    assert kd.teacher_dir is None
    kd = build(*RGB, "method=kd", f"method.teacher_checkpoint={d / 'cnn4_last.pt'}", run_dir=tmp_path / "b")
    assert same_weights(kd.teacher, states["cnn4"])


def test_kd_from_a_whole_module_as_it_is(files, tmp_path):
    d, states = files
    kd = build(*RGB, "method=kd", f"method.teacher_checkpoint={d / 'r18_module.pt'}", run_dir=tmp_path)
    assert isinstance(kd.teacher, torchvision.models.ResNet)
    assert same_weights(kd.teacher, states["r18"])


@pytest.mark.parametrize("form", [
    ["method.teacher_model={_target_: torchvision.models.resnet18}"],  # a mapping of model keys, with _target_
    ["method.teacher_model=torchvision"],  # a model option (model=torchvision: resnet18 by default)
    ["+model@method.teacher_model=torchvision", "method.teacher_model.name=resnet18"],  # Hydra's group syntax
])
def test_kd_from_a_state_dict_for_another_model_config(files, tmp_path, form):
    d, states = files
    kd = build(*RGB, "method=kd", f"method.teacher_checkpoint={d / 'r18.pt'}", *form, run_dir=tmp_path)
    assert isinstance(kd.teacher, torchvision.models.ResNet)
    assert same_weights(kd.teacher, states["r18"])


def test_a_trained_kd_student_reports_the_checkpoint_teachers_accuracy(files, tmp_path):
    """The same weights as a whole module and as a state_dict: the same teacher accuracy in the first epoch's row,
    and the same student."""
    import json

    d, _ = files
    rows = []
    for name in ("cnn4_module.pt", "cnn4.pt"):
        res = run(compose_cfg(*RGB, "method=kd", f"method.teacher_checkpoint={d / name}"), tmp_path / name)
        assert res["status"] == "completed"
        rows.append(json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0]))
    assert "teacher_test_acc" in rows[0]
    assert rows[0]["teacher_test_acc"] == rows[1]["teacher_test_acc"]
    assert rows[0]["train_loss"] == rows[1]["train_loss"]


def test_pretrained_teacher_by_name_from_the_cache_offline(tmp_path, monkeypatch):
    """method.teacher_model={_target_: torchvision.models.resnet18, pretrained: true}: the cached ImageNet weights,
    for a student of 1,000 classes; of 4 classes, refused (a teacher needs the student's classes)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(5)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    teacher = "method.teacher_model={_target_: torchvision.models.resnet18, pretrained: true}"
    kd = build(*RGB, "dataset.num_classes=1000", "dataset.num_train=64", "method=kd", teacher, run_dir=tmp_path / "a")
    assert same_weights(kd.teacher, state)
    with pytest.raises(ConfigError, match=r"method.teacher_model='torchvision.models.resnet18' is invalid: its "
                                          r"pretrained weights have 1000 classes, the student's dataset 4"):
        build(*RGB, "method=kd", teacher, run_dir=tmp_path / "b")


def test_a_given_teacher_module_replaces_the_configured_one(tmp_path):
    """run(cfg, teacher=module): KD needs no teacher key then, and uses a frozen copy of the module."""
    torch.manual_seed(3)
    module = DigitsCNN(4, 3)
    kd = build(*RGB, "method=kd", run_dir=tmp_path / "kd", teacher=module)
    assert same_weights(kd.teacher, module.state_dict())
    assert not kd.teacher.training
    assert module.training
    with pytest.raises(ConfigError, match=r"the teacher module given to the run is invalid: it gives outputs of "
                                          r"shape \(2, 7\), not \(batch, 4\)"):
        build(*RGB, "method=kd", run_dir=tmp_path / "bad", teacher=DigitsCNN(7, 3))


def test_lwkd_from_a_checkpoint_and_from_a_given_module(files, tmp_path):
    """LW-KD's teacher reads SynMNIST-K: a LeNet-5 state_dict (the model method.teacher names) of the student's
    classes; its logits on the synthetic twins fill the bank."""
    d, states = files
    args = ("dataset=synthetic", "dataset.num_train=40", "dataset.num_test=20", "dataset.shape=[1,8,8]",
            "dataset.num_classes=4", "dataset.batch_size=16", "model=digits_cnn", "trainer.epochs=1",
            "trainer.progress=false", "method=lwkd_digits")
    m = build(*args, f"method.teacher_checkpoint={d / 'lenet4.pt'}", run_dir=tmp_path / "a")
    assert same_weights(m.teacher, states["lenet4"])
    assert m.bank is not None
    assert m.teacher_dir is None
    with pytest.raises(ConfigError, match=r"method.teacher_checkpoint='.*lenet10.pt' is invalid: it holds a model of "
                                          r"10 classes \(11.weight: 10x84\), the student's dataset has 4"):
        build(*args, f"method.teacher_checkpoint={d / 'lenet10.pt'}", run_dir=tmp_path / "b")
    given = build_lenet5(None, 4, 1)
    m = build(*args, run_dir=tmp_path / "c", teacher=given)
    assert same_weights(m.teacher, given.state_dict())
    assert m.bank is not None


BAD_TEACHERS = [
    (["method.teacher_checkpoint={d}/none.pt"], "method.teacher_checkpoint='{d}/none.pt' is invalid: allowed a file "
     "saved with torch.save (a state_dict or a whole module): no such file"),
    (["method.teacher_checkpoint={d}/cnn7.pt"], "method.teacher_checkpoint='{d}/cnn7.pt' is invalid: it holds a model "
     "of 7 classes (fc.weight: 7x64), the student's dataset has 4"),
    (["method.teacher_checkpoint={d}/r18.pt"], "method.teacher_checkpoint='{d}/r18.pt' is invalid: it does not fit "
     "model=digits_cnn (tensors: 18 missing (features.0.weight, features.1.weight, ...); 120 unexpected"),
    (["method.teacher_checkpoint={d}/r18.pt", "method.teacher_model=resnet20"], "it does not fit model=resnet20"),
    (["method.teacher_checkpoint={d}/cnn4.pt", "method.teacher_model=nonexistent"], "method.teacher_model="
     "'nonexistent' is invalid: allowed a model option (one of bert,"),
    (["method.teacher_checkpoint={d}/cnn4.pt", "method.teacher_model={_target_: nopkg.Net}"], "method.teacher_model: "
     "model._target_='nopkg.Net' is invalid: allowed the import path of a callable"),
    (["method.teacher_model=digits_cnn"], "method.teacher_model='digits_cnn' is invalid: allowed a model with "
     "pretrained=true"),
    (["method.teacher_model={_target_: torchvision.models.resnet34, pretrained: true}"], "method.teacher_model: "
     "model.pretrained=true is invalid: torchvision's ResNet34_Weights.IMAGENET1K_V1 is not in the local cache"),
    (["method.teacher_checkpoint={d}/cnn4.pt", "method.teacher_run=/some/run"], "method.teacher_checkpoint='{d}/"
     "cnn4.pt' is invalid: allowed null when method.teacher_run names the teacher"),
    ([], "method.teacher_run=None is invalid: allowed a run directory, or null with method.teacher a list of "
     "overrides"),
]


@pytest.mark.parametrize("args,fragment", BAD_TEACHERS)
def test_bad_teacher_input_exit_2_one_line(files, tmp_path, monkeypatch, refused, args, fragment):
    d, _ = files
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache, no network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = [a.replace("{d}", str(d)) for a in args]
    assert fragment.replace("{d}", str(d)) in refused(*RGB, "method=kd", *args)
