"""The CIFAR python-pickle reader: str and bytes keys, and one ConfigError line for every malformed file."""
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import run_cli
from lstsd.errors import ConfigError
from lstsd.data.readers.cifar import load_cifar

LAYOUT = {  # name: (folder, files in order, label key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels", 10),
    "cifar100": ("cifar-100-python", ["train", "test"], "fine_labels", 100),
}


def batch(n, key, classes, seed=0, as_bytes=False):
    """One batch dict as the official archive holds it (bytes keys: as Python 3 tools re-save it)."""
    rng = np.random.default_rng(seed)
    entry = {"batch_label": "a test batch", "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             key: rng.integers(0, classes, n).tolist()}
    return {k.encode(): v for k, v in entry.items()} if as_bytes else entry


def write_folder(root, name, n=4, as_bytes=False):
    """A tiny CIFAR folder in the real on-disk layout; returns {file name: (path, entry)}."""
    folder, files, key, classes = LAYOUT[name]
    (root / folder).mkdir(parents=True)
    written = {}
    for i, f in enumerate(files):
        entry = batch(n, key, classes, seed=i, as_bytes=as_bytes)
        path = root / folder / f
        path.write_bytes(pickle.dumps(entry))
        written[f] = (path, entry)
    return written


def read(root, name="cifar10"):
    return load_cifar(SimpleNamespace(root=str(root), download=False), name)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_bytes_keys_read_like_str_keys(tmp_path, name):
    write_folder(tmp_path / "str", name)
    write_folder(tmp_path / "bytes", name, as_bytes=True)
    a, b = read(tmp_path / "str", name), read(tmp_path / "bytes", name)
    for split in ("train", "test"):
        (xa, ya), (xb, yb) = a.sets[split], b.sets[split]
        assert xa.dtype == xb.dtype == torch.uint8
        assert ya.dtype == yb.dtype == torch.int64
        assert xa.shape[1:] == (3, 32, 32)
        assert torch.equal(xa, xb)
        assert torch.equal(ya, yb)


def test_happy_path_keeps_files_in_order(tmp_path):
    written = write_folder(tmp_path, "cifar10", n=3)
    splits = read(tmp_path)
    x, y = splits.sets["train"]
    entries = [written[f"data_batch_{i}"][1] for i in range(1, 6)]
    assert torch.equal(x, torch.from_numpy(np.concatenate([e["data"] for e in entries])).view(-1, 3, 32, 32))
    assert y.tolist() == sum((e["labels"] for e in entries), [])


def good(key="labels", classes=10, n=10):
    return batch(n, key, classes, seed=7)


def with_(key="labels", classes=10, **changes):
    entry = good(key, classes)
    entry.update(changes)
    return pickle.dumps({k: v for k, v in entry.items() if v is not None})


BAD = {  # case: (name, file contents, fragment of the message)
    "empty": ("cifar10", b"", "the file is empty"),
    "truncated": ("cifar10", pickle.dumps(good())[:1500], "the pickle is truncated"),
    "garbage": ("cifar10", b"\x89PNG\r\n\x1a\n" + bytes(64), "not a readable pickle (UnpicklingError"),
    "text": ("cifar10", b"hello, this is plain text\n", "not a readable pickle"),
    "not_a_dict": ("cifar10", pickle.dumps([1, 2, 3]), "the pickle holds a list, not a dict"),
    "no_data": ("cifar10", with_(data=None), "it has no 'data' key (str or bytes); its keys: 'batch_label', 'labels'"),
    "no_labels": ("cifar10", with_(labels=None),
                  "it has no 'labels' key (str or bytes); its keys: 'batch_label', 'data'"),
    "no_fine_labels": ("cifar100", pickle.dumps({"data": good()["data"], "coarse_labels": [0] * 10}),
                       "it has no 'fine_labels' key (str or bytes); its keys: 'coarse_labels', 'data'"),
    "wrong_shape": ("cifar10", with_(data=np.zeros((10, 3000), np.uint8)),
                    "data has shape (10, 3000): allowed N x 3072 values"),
    "size_not_multiple": ("cifar10", with_(data=np.zeros(5000, np.uint8)), "data has shape (5000,)"),
    "hwc_images": ("cifar10", with_(data=np.zeros((10, 32, 32, 3), np.uint8)), "data has shape (10, 32, 32, 3)"),
    "float_pixels": ("cifar10", with_(data=np.zeros((10, 3072), np.float32)), "data has dtype float32: allowed uint8"),
    "pixels_over_255": ("cifar10", with_(data=np.full((10, 3072), 256)), "data holds values in 256..256"),
    "no_images": ("cifar10", with_(data=np.zeros((0, 3072), np.uint8), labels=[]), "data holds no images"),
    "float_labels": ("cifar10", with_(labels=[1.5] * 10), "labels have dtype float64: allowed integers in [0, 10)"),
    "integer_valued_floats": ("cifar10", with_(labels=[1.0] * 10), "labels have dtype float64"),
    "string_labels": ("cifar10", with_(labels=["cat"] * 10), "labels have dtype <U3"),
    "label_10": ("cifar10", with_(labels=[0] * 9 + [10]), "labels hold 1 value(s) outside [0, 10) (the first: 10)"),
    "negative_label": ("cifar10", with_(labels=[-1] * 2 + [0] * 8),
                       "labels hold 2 value(s) outside [0, 10) (the first: -1)"),
    "fine_label_100": ("cifar100", with_("fine_labels", 100, fine_labels=[100] + [99] * 9),
                       "fine_labels hold 1 value(s) outside [0, 100) (the first: 100)"),
    "nested_labels": ("cifar10", with_(labels=[[1]] * 10), "labels has shape (10, 1)"),
    "fewer_labels": ("cifar10", with_(labels=[1] * 9), "labels hold 9 values for 10 images"),
    "more_labels": ("cifar100", with_("fine_labels", 100, fine_labels=[1] * 11),
                    "fine_labels hold 11 values for 10 images"),
    "bytes_keys_wrong_shape": ("cifar10", pickle.dumps({b"data": np.zeros((10, 100), np.uint8), b"labels": [0] * 10}),
                               "data has shape (10, 100)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_file_is_one_config_error_line(tmp_path, case):
    name, contents, fragment = BAD[case]
    written = write_folder(tmp_path, name)
    path = written["data_batch_1" if name == "cifar10" else "train"][0]
    path.write_bytes(contents)
    with pytest.raises(ConfigError) as info:
        read(tmp_path, name)
    message = str(info.value)
    title = "CIFAR-10" if name == "cifar10" else "CIFAR-100"
    assert message.startswith(f"dataset.root: {path.resolve()} is not a {title} batch: ")
    assert fragment in message
    assert "\n" not in message
    assert "\r" not in message


def test_test_file_is_checked_too(tmp_path):
    written = write_folder(tmp_path, "cifar10")
    path = written["test_batch"][0]
    path.write_bytes(with_(labels=[1] * 9))
    with pytest.raises(ConfigError, match="test_batch is not a CIFAR-10 batch: labels hold 9 values for 10 images"):
        read(tmp_path)


@pytest.mark.parametrize("case", ["fewer_labels", "garbage"])
def test_cli_reports_a_malformed_file_in_one_line(tmp_path, case):
    name, contents, fragment = BAD[case]
    root = tmp_path / "data"
    path = write_folder(root, name)["data_batch_1"][0]
    path.write_bytes(contents)
    r = run_cli("dataset=cifar10", f"dataset.root={root}", "trainer.epochs=1", "model=resnet20",
                f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("lstsd: error: dataset.root: "), r.stderr
    assert str(path.resolve()) in lines[0]
    assert fragment in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
