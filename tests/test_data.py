"""Datasets and the in-memory loader: the (input, target, index) contract, splits, CIFAR pickles."""
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lstsd.config import DatasetConfig
from lstsd.data.readers.synthetic import SyntheticConfig
from lstsd.errors import ConfigError
from lstsd.data import build_data
from lstsd.data.loaders.memory import crop_flip, crop_flip_params, epoch_generator, pad_crop_flip


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
    assert len(loader) == 5
    assert not torch.equal(orders[0], orders[1])  # reshuffled each epoch
    assert torch.equal(torch.cat([b.index for b in loader.epoch(1)]), orders[1])  # an epoch is reproducible


def test_digits_fixed_split():
    data = build_data(DatasetConfig(name="digits"), seed=5, device="cpu")
    assert (data.info.num_train, data.info.num_test, data.info.num_classes) == (1297, 500, 10)
    assert data.info.input_shape == (1, 8, 8)
    other = build_data(DatasetConfig(name="digits"), seed=6, device="cpu")
    assert torch.equal(data.evals["test"].x, other.evals["test"].x)  # the split does not depend on the seed
    # normalised with the training split's statistics
    x = torch.cat([b.x for b in data.train.epoch(0)])
    assert abs(x.mean().item()) < 1e-4
    assert abs(x.std().item() - 1) < 1e-3


def test_validation_split_is_reproducible_and_disjoint():
    full = build_data(synthetic(), seed=0, device="cpu")
    a = build_data(synthetic(val_fraction=0.25), seed=0, device="cpu")
    b = build_data(synthetic(val_fraction=0.25), seed=1, device="cpu")
    assert (a.info.num_train, a.info.num_val) == (28, 9)
    assert torch.equal(a.evals["val"].x, b.evals["val"].x)
    assert torch.equal(a.train.x, b.train.x)
    rows = {tuple(r.flatten().tolist()) for r in full.train.x}
    val_rows = {tuple(r.flatten().tolist()) for r in a.evals["val"].x}
    train_rows = {tuple(r.flatten().tolist()) for r in a.train.x}
    assert val_rows | train_rows == rows
    assert not val_rows & train_rows
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
    assert data.info.input_shape == (3, 32, 32)
    assert data.train.x.dtype == torch.uint8
    key = "labels" if name == "cifar10" else "fine_labels"
    test = written["test_batch" if name == "cifar10" else "test"]
    assert torch.equal(data.evals["test"].x, torch.from_numpy(test["data"]).view(-1, 3, 32, 32))
    assert data.evals["test"].y.tolist() == test[key]
    assert data.train.augment is False
    assert (build_data(
        DatasetConfig(name=name, root=str(tmp_path)), 0, "cpu").train.augment is True)


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


def test_device_augmentation_has_torchvisions_distribution():
    """Crop offsets uniform over the 81 positions (chi-square, 80 dof, below the 0.1 % critical value 124.84),
    flips at rate 0.5; torchvision's RandomCrop(32, padding=4) draws from the same 81 positions."""
    from torchvision import transforms

    n = 81 * 300
    oy, ox, flip = crop_flip_params(n, epoch_generator(0, 0))
    counts = torch.bincount(oy * 9 + ox, minlength=81).double()
    assert len(counts) == 81
    assert ((counts - n / 81) ** 2 / (n / 81)).sum() < 124.84
    assert abs(flip.double().mean().item() - 0.5) < 4 * (0.25 / n) ** 0.5
    torch.manual_seed(0)
    padded = torch.zeros(3, 40, 40)
    tv = {transforms.RandomCrop.get_params(padded, (32, 32))[:2] for _ in range(3000)}
    assert tv == {(i, j) for i in range(9) for j in range(9)}


def test_device_augmentation_equals_torchvisions_crop_and_flip_of_the_same_offsets():
    from torchvision.transforms import functional as TF

    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    oy, ox, flip = crop_flip_params(16, epoch_generator(3, 1))
    out = crop_flip(x, oy, ox, flip)
    assert flip.any()
    assert not flip.all()
    assert out.dtype == torch.uint8
    for i in range(16):
        ref = TF.crop(TF.pad(x[i], [4], fill=0), int(oy[i]), int(ox[i]), 32, 32)
        assert torch.equal(out[i], TF.hflip(ref) if flip[i] else ref)


def test_channels_last_batches():
    data = build_data(synthetic(), seed=0, device="cpu", channels_last=True)
    batch = next(data.train.epoch(0))
    assert batch.x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("workers", [0, 2])
def test_torchvision_loader_is_the_same_data_pipeline(workers):
    """The reference path: the same (seed, epoch) order and normalisation as the device path, every index once
    per epoch, the last partial batch kept; augmented images are pad-4 crops (flipped or not) of the originals;
    reproducible for a fixed number of workers."""
    from lstsd.data.loaders.memory import MemoryLoader, TorchvisionLoader
    from lstsd.data.types import Splits

    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (37, 3, 12, 12), dtype=torch.uint8, generator=g), torch.arange(37) % 3
    splits = Splits({"train": (x, y), "test": (x[:11], y[:11])}, 3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                    scale=255.0, augment="crop_flip")
    make = lambda cls, split, train, **kw: cls(split, splits, 8, "cpu", augment=train, shuffle=train, seed=0, **kw)  # noqa: E731
    for a, b in zip(make(MemoryLoader, "test", False).epoch(0),
                    make(TorchvisionLoader, "test", False, num_workers=workers).epoch(0)):
        assert torch.equal(a.index, b.index)
        assert torch.equal(a.y, b.y)
        assert torch.allclose(a.x, b.x, atol=1e-6)
    tv = make(TorchvisionLoader, "train", True, num_workers=workers)
    batches = list(tv.epoch(0))
    assert [len(b.y) for b in batches] == [8, 8, 8, 8, 5]
    index = torch.cat([b.index for b in batches])
    assert torch.equal(index, torch.cat([b.index for b in make(MemoryLoader, "train", True).epoch(0)]))
    assert sorted(index.tolist()) == list(range(37))
    flips = 0
    for b in batches:
        for img, i in zip(b.x, b.index):
            pixels = img * tv.std[0] + tv.mean[0]
            padded = torch.nn.functional.pad(x[i].float(), (4, 4, 4, 4))
            crops = [padded[:, r:r + 12, c:c + 12] for r in range(9) for c in range(9)]
            plain = any(torch.allclose(pixels, p, atol=1e-3) for p in crops)
            flipped = any(torch.allclose(pixels, p.flip(-1), atol=1e-3) for p in crops)
            assert plain or flipped
            flips += flipped and not plain
    assert 0 < flips < 37
    again = list(make(TorchvisionLoader, "train", True, num_workers=workers).epoch(0))
    assert all(torch.equal(a.x, b.x) for a, b in zip(batches, again))


def test_shards_of_the_global_batches():
    """2 processes, batch 8 each, 45 samples: global batches of 16 cut into consecutive halves; the last 13
    positions shared 7 + 7 with one padded from the epoch's start; together every position at least once."""
    from lstsd.data.loaders.memory import MemoryLoader
    from lstsd.data.types import Splits

    splits = Splits({"train": (torch.zeros(45, 1, 2, 2), torch.zeros(45, dtype=torch.long))}, 2, (0.0,), (1.0,))
    ranks = [MemoryLoader("train", splits, 8, "cpu", False, True, 0, rank=r, world_size=2) for r in (0, 1)]
    shards = [[p.tolist() for p in loader.shards()] for loader in ranks]
    assert len(ranks[0]) == 3
    assert shards[0][0] == list(range(0, 8))
    assert shards[1][0] == list(range(8, 16))
    assert shards[0][2] == list(range(32, 39))
    assert shards[1][2] == [39, 40, 41, 42, 43, 44, 0]
    assert sorted({p for s in shards for b in s for p in b}) == list(range(45))
    assert [p.tolist() for p in ranks[1].shards(start_step=2)] == [shards[1][2]]
    alone = MemoryLoader("train", splits, 8, "cpu", False, True, 0)
    assert [len(p) for p in alone.shards()] == [8] * 5 + [5]  # one process: the last partial batch as it is
