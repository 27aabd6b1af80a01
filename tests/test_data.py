"""Datasets and the in-memory loader: the (input, target, index) contract, splits, CIFAR pickles."""
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lstsd.config import ConfigError, DatasetConfig, SyntheticConfig
from lstsd.data import build_data
from lstsd.data.loader import epoch_generator, pad_crop_flip


def synthetic(**kw):
    base = dict(name="synthetic", num_train=37, num_test=11, shape=[1, 8, 8], num_classes=3, batch_size=8)
    return SyntheticConfig(**(base | kw))


def test_every_index_once_per_epoch_and_stable():
    data = build_data(synthetic(), seed=0, device="cpu")
    loader, n = data.train, data.info.num_train
    x_ref, y_ref = loader.x, loader.y
    orders = []
    for epoch in range(3):
        seen = []
        for batch in loader.epoch(epoch):
            assert batch.x.shape[0] == batch.y.shape[0] == batch.index.shape[0] <= 8
            # the index names the same sample in every epoch: same label, same (normalised) input
            assert torch.equal(batch.y, y_ref[batch.index])
            assert torch.allclose(batch.x, (x_ref[batch.index].float() - loader.mean) / loader.std)
            seen.append(batch.index)
        order = torch.cat(seen)
        assert sorted(order.tolist()) == list(range(n))  # exactly once, last partial batch kept
        orders.append(order)
    assert len(loader) == 5 and not torch.equal(orders[0], orders[1])  # reshuffled each epoch
    assert torch.equal(torch.cat([b.index for b in loader.epoch(1)]), orders[1])  # an epoch is reproducible


def test_digits_fixed_split():
    data = build_data(DatasetConfig(name="digits"), seed=5, device="cpu")
    assert (data.info.num_train, data.info.num_test, data.info.num_classes) == (1297, 500, 10)
    assert data.info.input_shape == (1, 8, 8)
    other = build_data(DatasetConfig(name="digits"), seed=6, device="cpu")
    assert torch.equal(data.evals["test"].x, other.evals["test"].x)  # the split does not depend on the seed
    # normalised with the training split's statistics
    x = torch.cat([b.x for b in data.train.epoch(0)])
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3


def test_validation_split_is_reproducible_and_disjoint():
    full = build_data(synthetic(), seed=0, device="cpu")
    a = build_data(synthetic(val_fraction=0.25), seed=0, device="cpu")
    b = build_data(synthetic(val_fraction=0.25), seed=1, device="cpu")
    assert (a.info.num_train, a.info.num_val) == (28, 9)
    assert torch.equal(a.evals["val"].x, b.evals["val"].x) and torch.equal(a.train.x, b.train.x)
    rows = {tuple(r.flatten().tolist()) for r in full.train.x}
    val_rows = {tuple(r.flatten().tolist()) for r in a.evals["val"].x}
    train_rows = {tuple(r.flatten().tolist()) for r in a.train.x}
    assert val_rows | train_rows == rows and not val_rows & train_rows
    assert set(a.evals) == {"val", "test"}


def write_cifar(root, name, n_train, n_test, classes):
    """A tiny CIFAR folder in the real python-pickle format."""
    rng = np.random.default_rng(0)
    folder, files, key = {
        "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels"),
        "cifar100": ("cifar-100-python", ["train", "test"], "fine_labels"),
    }[name]
    (root / folder).mkdir(parents=True)
    per_file = {f: (n_test if "test" in f else n_train // (len(files) - 1)) for f in files}
    written = {}
    for f, n in per_file.items():
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: rng.integers(0, classes, n).tolist()}
        written[f] = entry
        with open(root / folder / f, "wb") as fh:
            pickle.dump(entry, fh)
    return written


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_pickle_loader(tmp_path, name, classes):
    written = write_cifar(tmp_path, name, 20, 6, classes)
    cfg = DatasetConfig(name=name, root=str(tmp_path), batch_size=8, augment=False)
    data = build_data(cfg, seed=0, device="cpu")
    assert (data.info.num_train, data.info.num_test, data.info.num_classes) == (20, 6, classes)
    assert data.info.input_shape == (3, 32, 32) and data.train.x.dtype == torch.uint8
    key = "labels" if name == "cifar10" else "fine_labels"
    test = written["test_batch" if name == "cifar10" else "test"]
    assert torch.equal(data.evals["test"].x, torch.from_numpy(test["data"]).view(-1, 3, 32, 32))
    assert data.evals["test"].y.tolist() == test[key]
    assert data.train.augment is False and build_data(
        DatasetConfig(name=name, root=str(tmp_path)), 0, "cpu").train.augment is True


def test_missing_cifar_folder_names_the_expected_path(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.root: cifar100 not found: .*cifar-100-python"):
        build_data(DatasetConfig(name="cifar100", root=str(tmp_path)), seed=0, device="cpu")


def test_pad_crop_flip_is_a_crop_of_the_padded_image():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).view(2, 3, 32, 32).to(torch.uint8)
    g = epoch_generator(0, 0)
    state = g.get_state()
    out = pad_crop_flip(x, g)
    g.set_state(state)
    oy, ox = torch.randint(0, 9, (2,), generator=g), torch.randint(0, 9, (2,), generator=g)
    flip = torch.rand(2, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(2):
        crop = padded[i, :, oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)
