"""MNIST-1D: the generated dataset (canonical, cached, the published pickle), its reference models and recipe."""
import pickle
import random
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import compose_cfg
from lstsd.config import validate
from lstsd.errors import ConfigError
from lstsd.data.readers import mnist1d
from lstsd.data.readers.mnist1d import GeneratorArgs, load_arrays
from lstsd.models import build_model


def args_cfg(root, **changes):
    """A dataset config namespace as validate() makes it: the package's defaults, ``changes`` applied."""
    cfg = validate(compose_cfg("dataset=mnist1d", f"dataset.root={root}",
                               *(f"dataset.{k}={v}" for k, v in changes.items()))).dataset
    return cfg


@pytest.fixture(scope="module")
def canonical():
    return mnist1d.generate(GeneratorArgs())


def test_the_canonical_dataset_is_the_published_layout_and_identical_on_every_generation(canonical):
    states = random.getstate(), np.random.get_state()[1].copy()
    again = mnist1d.generate(GeneratorArgs())
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])  # restored
    assert canonical["x"].shape == (4000, 40)
    assert canonical["x_test"].shape == (1000, 40)
    assert canonical["y"].shape == (4000,)
    assert canonical["y_test"].shape == (1000,)
    for key in canonical:
        assert np.array_equal(canonical[key], again[key])
    labels = np.concatenate([canonical["y"], canonical["y_test"]])
    assert np.bincount(labels).tolist() == [500] * 10  # num_samples // 10 sequences of each template
    x = np.concatenate([canonical["x"], canonical["x_test"]])
    assert abs(x.mean()) < 1e-6
    assert abs(x.std() - 1) < 1e-6  # the package standardises the whole set


def test_every_generator_argument_changes_the_cache_key():
    base = GeneratorArgs()
    changed = {"num_samples": 4000, "train_split": 0.7, "template_len": 10, "padding": (30, 60), "scale_coeff": 0.5,
               "max_translation": 40, "corr_noise_scale": 0.3, "iid_noise_scale": 0.01, "shear_scale": 0.5,
               "shuffle_seq": True, "final_seq_length": 50, "seed": 1}
    assert set(changed) == set(base.__dataclass_fields__)
    keys = {replace(base, **{k: v}).key() for k, v in changed.items()} | {base.key()}
    assert len(keys) == len(changed) + 1
    assert base.key() == GeneratorArgs().key()


def test_cache_is_written_read_back_and_regenerated_when_corrupt_or_foreign(tmp_path, monkeypatch, caplog):
    cfg = args_cfg(tmp_path, num_samples=200)
    calls = []
    real = mnist1d.generate
    monkeypatch.setattr(mnist1d, "generate", lambda a: calls.append(a) or real(a))
    first = load_arrays(cfg)
    cache = tmp_path / "mnist1d" / f"{GeneratorArgs.of(cfg).key()}.npz"
    assert cache.is_file()
    assert len(calls) == 1
    assert first["x"].shape == (160, 40)
    again = load_arrays(cfg)
    assert len(calls) == 1
    assert all(np.array_equal(first[k], again[k]) for k in first)  # from the cache
    cache.write_bytes(b"not an npz file")
    regenerated = load_arrays(cfg)
    assert len(calls) == 2
    assert np.array_equal(regenerated["x"], first["x"])
    assert "generating it again" in caplog.text
    np.savez(cache, x=first["x"][:10], y=first["y"][:10], x_test=first["x_test"], y_test=first["y_test"])
    load_arrays(cfg)  # arrays that do not fit the arguments: not trusted either
    assert len(calls) == 3
    other = load_arrays(args_cfg(tmp_path, num_samples=200, iid_noise_scale=0.03))  # another key: generated
    assert len(calls) == 4
    assert not np.array_equal(other["x"], first["x"])


def test_the_published_pickle_is_read_when_present_and_refused_when_corrupt(tmp_path, canonical):
    cfg = args_cfg(tmp_path)
    published = tmp_path / "mnist1d_data.pkl"
    data = dict(canonical, x=canonical["x"].astype(np.float64), t=np.linspace(-1, 1, 40),
                templates={"x": np.zeros((10, 12)), "t": np.zeros(12), "y": np.arange(10)})
    with open(published, "wb") as f:
        pickle.dump(data, f, protocol=3)  # as mnist1d.utils.to_pickle writes it
    read = load_arrays(cfg)
    assert np.array_equal(read["x"], canonical["x"].astype(np.float32))
    assert read["x"].dtype == np.float32
    assert not (tmp_path / "mnist1d").exists()  # nothing generated
    published.write_bytes(pickle.dumps(data)[:100])
    with pytest.raises(ConfigError, match=r"dataset.root: .*mnist1d_data.pkl is not a readable copy of the "
                                          r"published MNIST-1D \(UnpicklingError"):
        load_arrays(cfg)

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    published.write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(ConfigError, match="refers to builtins.print, not only NumPy arrays"):
        load_arrays(cfg)
    with open(published, "wb") as f:
        pickle.dump(dict(data, y=data["y"] + 5), f)
    with pytest.raises(ConfigError, match=r"y is int64 \(4000,\), expected \(4000,\) integer labels in \[0, 10\)"):
        load_arrays(cfg)
    assert load_arrays(args_cfg(tmp_path, num_samples=200))["x"].shape == (160, 40)  # other arguments: generated


@pytest.mark.parametrize("name,params", [("mnist1d_cnn", 5_210), ("mnist1d_mlp", 15_210), ("mnist1d_gru", 5_134)])
def test_reference_models_parameter_counts_and_shapes(name, params):
    conf = validate(compose_cfg("dataset=mnist1d", f"model={name}"))
    model = build_model(conf.model, 10, (1, 40))
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(3, 1, 40)).shape == (3, 10)


def test_cnn_is_the_reference_convbase():
    """Conv1d(1, 25, 5, s2, p1) -> 19 steps, two Conv1d(25, 25, 3, s2, p1) -> 10 -> 5, ReLU each, 125 -> 10."""
    model = build_model(SimpleNamespace(arch="mnist1d_cnn", width=25), 10, (1, 40))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == \
        [(1, 25, 5, 2, 1), (25, 25, 3, 2, 1), (25, 25, 3, 2, 1)]
    assert model.features(torch.zeros(2, 1, 40)).shape == (2, 125)
    assert model.linear.in_features == 125


def test_reference_recipe_two_epochs(tmp_path):
    from lstsd.training.run import run

    res = run(compose_cfg("experiment=mnist1d", "trainer.epochs=2", "trainer.progress=false",
                          f"dataset.root={tmp_path}"), tmp_path / "run")
    assert res["status"] == "completed"
    assert res["dataset"] == "mnist1d"
    assert res["input_shape"] == [1, 40]
    assert res["num_classes"] == 10
    assert res["test_acc_final"] > 30  # 10 % is chance; two epochs reach ~45 %
    conf = validate(compose_cfg("experiment=mnist1d"))
    assert (conf.optim.lr, conf.optim.weight_decay, conf.dataset.batch_size, conf.trainer.epochs,
            conf.schedule.name) == (1e-2, 0.0, 100, 200, "constant")
    assert conf.optim._target_ == "torch.optim.Adam"
    assert 4000 // 100 * 200 == 8000  # the reference 8,000 steps


@pytest.mark.parametrize("overrides,message", [
    (["dataset.iid_noise_scale=-0.1"], "dataset.iid_noise_scale=-0.1 is invalid: allowed a finite number >= 0"),
    (["dataset.corr_noise_scale=inf"], "dataset.corr_noise_scale=inf is invalid: allowed a finite number >= 0"),
    (["dataset.train_split=1.0"], "dataset.train_split=1.0 is invalid: allowed a number in (0, 1)"),
    (["dataset.train_split=0.05", "dataset.num_samples=10"], "dataset.train_split=0.05 is invalid: allowed a "
                                                               "fraction that leaves both splits non-empty"),
    (["dataset.final_seq_length=8"], "dataset.final_seq_length=8 is invalid: allowed an integer >= "
                                     "dataset.template_len=12"),
    (["dataset.padding=[60,36]"], "dataset.padding=[60, 36] is invalid: allowed [low, high]"),
    (["dataset.augment=true"], "dataset.augment=True is invalid: allowed false for mnist1d"),
    (["dataset.data_seed=-1"], "dataset.data_seed=-1 is invalid"),
    (["dataset.noise_level=1"], "noise_level"),
])
def test_bad_generator_arguments_are_one_line_errors(overrides, message):
    with pytest.raises(Exception) as e:
        validate(compose_cfg("dataset=mnist1d", *overrides))
    assert message in str(e.value)


def test_a_model_that_does_not_fit_the_sequence_length_is_a_config_error(tmp_path):
    from lstsd.training.run import run

    cfg = compose_cfg("experiment=mnist1d", "dataset.final_seq_length=2", "dataset.template_len=2",
                      "dataset.num_samples=100", f"dataset.root={tmp_path}", "trainer.epochs=1")
    with pytest.raises(ConfigError, match=r"model=mnist1d_cnn does not fit sequences of length 2"):
        run(cfg, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"model=mnist1d_cnn is invalid for inputs of shape \[1, 8, 8\]"):
        run(compose_cfg("experiment=mnist1d", "dataset=digits", "trainer.epochs=1"), tmp_path / "run2")
