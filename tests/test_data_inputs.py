"""Bad data inputs refused before training with one line naming the file, array, class or key and what is
allowed: ImageFolder trees (unreadable folders and files, link loops, FIFOs, fewer than 2 classes, other class
folders in val/), ``dataset.num_workers`` out of range, .npz arrays (non-finite or out-of-float32 values, empty
splits, entries that are no .npy array, split-like names the reader does not read, bad labels, absurd class
counts) and dataset classes (a len() larger than the items, NaN inputs, samples of several sizes, empty splits).
Readers are called directly (no training can start); the cases that go through the command line use the
``refused`` fixture (lstsd's main in this process: exit 2, one line, nothing trained) and one real process."""
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_cli
from lstsd.data.readers.imagefolder import ImageFolderConfig, load_imagefolder
from lstsd.data.readers.npz import NpzConfig, load_npz
from lstsd.data.readers.pyclass import ClassDatasetConfig, load_class, probe_indices
from lstsd.data.workers import check_workers, most_workers
from lstsd.errors import ConfigError

CLASSES = ("ant", "bee", "cat")


def write_tree(root: Path, classes=CLASSES, per_class=2) -> Path:
    """root/train/<class>/<k>.png and root/val/<class>/<k>.png, 8x8 RGB images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / split / name / f"{k}.png")
    return root


def folder_cfg(root: Path, **kw) -> ImageFolderConfig:
    return ImageFolderConfig(name="imagefolder", root=str(root), image_size=8, resize_size=8, train_transforms=[],
                             eval_transforms=[], num_workers=0, **kw)


def refusal(load, cfg) -> str:
    with pytest.raises(ConfigError) as e:
        load(cfg)
    line = str(e.value)
    assert "\n" not in line
    return line


ALLOWED_FILES = ("allowed regular, readable image files (remove it, or set dataset.on_corrupt=skip to leave such "
                 "files out with a warning)")


# --------------------------------------------------------------------------------------------------- ImageFolder
def test_unreadable_class_folder_is_named(tmp_path, monkeypatch):
    """A class folder the run cannot list (os.walk, torchvision's scan, drops it without a word). The tests run as
    root, whom chmod 000 does not stop: os.scandir is patched to raise the PermissionError a user would get."""
    root = write_tree(tmp_path)
    locked = {str(root / "val" / "cat"), str(root / "train")}
    scandir = os.scandir

    def patched(path="."):
        if str(path) in locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", patched)
    assert refusal(load_imagefolder, folder_cfg(root)) == (
        f"dataset.root: {root / 'train'} cannot be listed (Permission denied): allowed folders the run can read "
        f"(fix their permissions)")
    locked.remove(str(root / "train"))
    assert refusal(load_imagefolder, folder_cfg(root)) == (
        f"dataset.root: {root / 'val' / 'cat'} cannot be listed (Permission denied): allowed folders the run can "
        f"read (fix their permissions)")


def test_unreadable_image_is_named_or_skipped(tmp_path, monkeypatch, caplog):
    """An image without read permission, even with dataset.verify=none (nothing opened before training). As root
    chmod 000 does not stop the reads: os.access is patched to answer as it would for a user."""
    root = write_tree(tmp_path)
    hidden = root / "val" / "bee" / "1.png"
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: str(path) != str(hidden) and access(path, mode))
    assert refusal(load_imagefolder, folder_cfg(root, verify="none")) == (
        f"dataset.root: {hidden} cannot be read (permission denied): {ALLOWED_FILES}")
    splits = load_imagefolder(folder_cfg(root, on_corrupt="skip"))
    assert len(splits.sets["test"][1]) == 5 and str(hidden) not in [splits.sets["test"][0].where(i) for i in range(5)]
    assert f"left out {hidden}: it cannot be read (permission denied)" in caplog.text


@pytest.mark.timeout(60)
def test_fifo_named_like_an_image_is_refused_never_opened(tmp_path):
    """A FIFO named x.png (opening it waits for a writer forever): refused by its type, never opened."""
    root = write_tree(tmp_path)
    fifo = root / "train" / "bee" / "x.png"
    os.mkfifo(fifo)
    assert refusal(load_imagefolder, folder_cfg(root)) == (
        f"dataset.root: {fifo} is a FIFO, not a regular file (never opened): {ALLOWED_FILES}")


def test_link_loops_refused_links_outside_followed_as_torchvision(tmp_path):
    """A link to a folder outside the tree is followed, as torchvision's ImageFolder follows it (the same files in
    the same order); a link back into the tree (a loop, or a class folder that is another's) is refused by name."""
    from torchvision.datasets import ImageFolder

    root = write_tree(tmp_path / "root")
    outside = write_tree(tmp_path / "outside", classes=("extra",)) / "train" / "extra"
    (root / "train" / "ant" / "more").symlink_to(outside, target_is_directory=True)
    splits = load_imagefolder(folder_cfg(root))
    files = splits.sets["train"][0]
    reference = ImageFolder(str(root / "train"))
    assert [files.where(i) for i in range(len(files))] == [p for p, _ in reference.samples]
    assert splits.sets["train"][1].tolist() == reference.targets and len(files) == 8
    loop = root / "train" / "ant" / "more" / "loop"
    loop.symlink_to(root / "train" / "ant", target_is_directory=True)
    line = (f"dataset.root: {loop} is a link back to {os.path.realpath(root / 'train' / 'ant')}, a folder the scan "
            f"of {root / 'train'} reaches anyway (a loop, or the same images listed twice): allowed links to "
            f"folders outside it")
    assert refusal(load_imagefolder, folder_cfg(root)) == line
    loop.unlink()
    twin = root / "train" / "dog"
    twin.symlink_to(root / "train" / "bee", target_is_directory=True)
    (root / "val" / "dog").mkdir()
    assert refusal(load_imagefolder, folder_cfg(root)).startswith(f"dataset.root: {twin} is a link back to ")


def test_fewer_than_two_classes_and_other_class_folders_in_val(tmp_path):
    one = write_tree(tmp_path / "one", classes=("ant",))
    assert refusal(load_imagefolder, folder_cfg(one)) == (
        f"dataset.root: {one / 'train'} holds 1 class folder ('ant'): allowed at least 2 class folders (one per "
        f"class, holding its images)")
    more = write_tree(tmp_path / "more")
    (more / "val" / "dog").mkdir()
    assert refusal(load_imagefolder, folder_cfg(more)) == (
        f"dataset.root: class folder 'dog' is in {more / 'val'} but not in {more / 'train'}: both must hold the "
        f"same class folders (their sorted order numbers the classes)")
    (more / "train" / "dog").mkdir()
    assert refusal(load_imagefolder, folder_cfg(more)) == (
        f"dataset.root: {more / 'train'}: class folder 'dog' holds no image file: allowed folders of images with "
        f"the extensions torchvision's ImageFolder reads")


def test_bad_tree_through_the_command_line_in_a_real_process(tmp_path):
    """The one real process: exit 2, one ``lstsd: error:`` line naming the FIFO, nothing trained."""
    root = write_tree(tmp_path / "root")
    fifo = root / "val" / "cat" / "z.jpg"
    os.mkfifo(fifo)
    run = tmp_path / "run"
    proc = run_cli("dataset=imagefolder", f"dataset.root={root}", "model=digits_cnn", "dataset.image_size=8",
                   "dataset.resize_size=8", "trainer.progress=false", f"hydra.run.dir={run}", timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and lines == [
        f"lstsd: error: dataset.root: {fifo} is a FIFO, not a regular file (never opened): {ALLOWED_FILES}"], \
        proc.stderr
    assert not (run / "metrics.jsonl").exists()


# ----------------------------------------------------------------------------------------- dataset.num_workers
def test_num_workers_bounded_where_workers_start(refused, tiny_cfg):
    top = most_workers()
    assert top == max(64, 4 * os.cpu_count())
    assert check_workers(0) == 0 and check_workers(top) == top
    line = (f"dataset.num_workers={top + 1} is invalid: allowed an integer in [0, {top}] (4 per CPU of this "
            f"machine's {os.cpu_count()}, and 64 at least)")
    with pytest.raises(ConfigError, match=r"^" + line.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
                       .replace("]", r"\]") + "$"):
        check_workers(top + 1)
    assert refused("dataset=synthetic", "dataset.num_train=40", "dataset.num_test=20", "dataset.shape=[1,8,8]",
                   "model=digits_cnn", "dataset.loader=torchvision", "dataset.num_workers=100000") == \
        f"lstsd: error: dataset.num_workers=100000 is invalid: allowed an integer in [0, {top}] (4 per CPU of " \
        f"this machine's {os.cpu_count()}, and 64 at least)"


# ----------------------------------------------------------------------------------------------------------- npz
def write_npz(path: Path, members: dict | None = None, **arrays) -> Path:
    """x_train (12 x 1 x 4 x 4 floats), y_train, x_test (6), y_test (3 classes), with ``arrays`` replacing or
    adding arrays (None: left out) and ``members`` raw zip members."""
    rng = np.random.default_rng(0)
    base = dict(x_train=rng.normal(size=(12, 1, 4, 4)), y_train=np.arange(12) % 3,
                x_test=rng.normal(size=(6, 1, 4, 4)), y_test=np.arange(6) % 3)
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    with zipfile.ZipFile(path, "a") as z:
        for name, data in (members or {}).items():
            z.writestr(name, data)
    return path


def nan_at(n: int) -> np.ndarray:
    """x_train with its first ``n`` values NaN, inf, -inf."""
    x = np.random.default_rng(1).normal(size=(12, 1, 4, 4))
    x.flat[:n] = [np.nan, np.inf, -np.inf][:n]
    return x


NPZ_CASES = {
    "non_finite": (dict(x_train=nan_at(3)), "x_train holds 3 non-finite values (NaN or inf): allowed finite numbers"),
    "inf_in_test": (dict(x_test=np.full((6, 1, 4, 4), np.inf)),
                    "x_test holds 96 non-finite values (NaN or inf): allowed finite numbers"),
    "beyond_float32": (dict(x_train=np.full((12, 1, 4, 4), 1e300)),
                       "x_train holds 192 values beyond float32's range (the largest magnitude 1e+300): allowed "
                       "finite numbers within +-3.403e+38 (inputs are read as float32)"),
    "empty_train": (dict(x_train=np.zeros((0, 1, 4, 4)), y_train=np.zeros(0, int)),
                    "x_train holds no samples (shape (0, 1, 4, 4)): allowed at least one"),
    "not_npy": (dict(y_test=None, members={"y_test": b"0 1 2 0 1 2"}),
                "y_test is not a .npy array (a member of the zip of another kind, bytes): allowed arrays written by "
                "numpy.savez"),
    "negative_labels": (dict(y_train=np.array([0, 1, 2, -1] * 3)),
                        "y_train holds 3 negative labels (the first: -1): allowed integers >= 0"),
    "float_labels": (dict(y_test=np.arange(6) % 3 + 0.5),
                     "y_test has dtype float64: allowed integer labels >= 0 (class numbers)"),
    "labels_2d": (dict(y_train=(np.arange(12) % 3)[:, None]),
                  "y_train has shape (12, 1): allowed one integer label per sample (shape (12,))"),
    "label_count": (dict(y_train=np.arange(11) % 3),
                    "y_train holds 11 labels for the 12 samples of x_train: allowed one label per sample"),
    "absurd_classes": (dict(y_test=np.array([0, 1, 2, 0, 1, 10**9])),
                       "y_test holds the label 1000000000, which would make 1000000001 classes: allowed labels in "
                       "[0, 100000)"),
    "sparse_classes": (dict(y_train=np.array([0, 1, 2] * 3 + [7, 8, 5000])),
                       "y_train holds the label 5000, which would make 5001 classes for 18 samples: allowed at most 10 "
                       "classes per sample (labels numbered 0, 1, 2, ...), or give dataset.num_classes"),
}


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_bad_npz_arrays_named(tmp_path, case):
    arrays, text = NPZ_CASES[case]
    path = write_npz(tmp_path / "d.npz", **arrays)
    assert refusal(load_npz, NpzConfig(name="npz", path=str(path))) == f"dataset.path: {path}: {text}"


def test_npz_names_the_reader_does_not_read(tmp_path):
    """A split-like array the reader would leave out is refused; other names (metadata) are ignored."""
    path = write_npz(tmp_path / "val.npz", x_val=np.zeros((2, 1, 4, 4)), y_val=np.zeros(2, int))
    assert refusal(load_npz, NpzConfig(name="npz", path=str(path))) == (
        f"dataset.path: {path} holds the array 'x_val', which dataset=npz does not read: allowed x_train, y_train, "
        f"x_test, y_test (a validation split is carved from x_train by dataset.val_fraction)")
    ok = write_npz(tmp_path / "ok.npz", classes=np.array(["a", "b", "c"]), members={"README.txt": b"notes"})
    splits = load_npz(NpzConfig(name="npz", path=str(ok)))
    assert splits.num_classes == 3 and splits.sets["train"][0].dtype == torch.float32
    # given, the class count is taken as it is (up to the project bound): sparse labels are then fine
    sparse = write_npz(tmp_path / "sparse.npz", y_train=np.array([0, 1, 2] * 3 + [7, 8, 5000]))
    assert load_npz(NpzConfig(name="npz", path=str(sparse), num_classes=5001)).num_classes == 5001
    with pytest.raises(ConfigError, match=r"^dataset.num_classes=200000 is invalid: allowed null or an integer in "
                                          r"\[2, 100000\]$"):
        NpzConfig(name="npz", path=str(sparse), num_classes=200_000)


def test_npz_nan_through_the_command_line(tmp_path, refused):
    path = write_npz(tmp_path / "d.npz", x_train=nan_at(3))
    assert refused("dataset=npz", f"dataset.path={path}", "model=digits_cnn") == \
        f"lstsd: error: dataset.path: {path}: x_train holds 3 non-finite values (NaN or inf): allowed finite numbers"


# ------------------------------------------------------------------------------------------------ dataset classes
class Items(torch.utils.data.Dataset):
    """10 items (3 x 8 x 8 floats, labels i % 3) a subclass spoils; ``train`` as torchvision's classes take it."""

    def __init__(self, train: bool = True):
        self.items = [(torch.full((3, 8, 8), float(i)), i % 3) for i in range(10)]
        self.spoil()

    def spoil(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class TooLong(Items):
    """len() 12, but 10 items: item 10 raises IndexError."""

    def __len__(self) -> int:
        return 12


class WithNaN(Items):
    def spoil(self) -> None:
        self.items[5][0][0, 0, :2] = float("nan")


class SizesVary(Items):
    def spoil(self) -> None:
        self.items[3] = (torch.zeros(3, 6, 6), 0)


class Empty(Items):
    def spoil(self) -> None:
        self.items = []


class HugeLabels(Items):
    def spoil(self) -> None:
        self.targets = [i % 3 for i in range(9)] + [123_456]


class Pictures(Items):
    """PIL images as inputs (no ToTensor): read as uint8 C x H x W tensors, as torchvision's MNIST is."""

    def __getitem__(self, i):
        from PIL import Image

        return Image.fromarray(np.full((8, 8, 3), i, np.uint8)), i % 3


def class_cfg(cls: type, **kw) -> ClassDatasetConfig:
    return ClassDatasetConfig(name="torchvision", _target_=f"{__name__}.{cls.__name__}", **kw)


CLASS_CASES = {
    TooLong: "its train split has len() 12, but item 10 cannot be read (IndexError: list index out of range): "
             "allowed a len() that counts the items it gives",
    WithNaN: "item 5 of its train split holds 2 non-finite input values (NaN or inf): allowed finite numbers",
    SizesVary: "items of its train split have different shapes (item 0: 3x8x8, item 3: 3x6x6): allowed one shape per "
               "split (dataset.loader=stream with transforms of a fixed output size, such as Resize + CenterCrop)",
    Empty: "its train split is empty (len() is 0): allowed at least one item",
    HugeLabels: "its train split holds the label 123456, which would make 123457 classes: allowed labels in "
                "[0, 100000)",
}


@pytest.mark.parametrize("cls", list(CLASS_CASES), ids=lambda c: c.__name__)
def test_bad_dataset_class_named(cls):
    assert refusal(load_class, class_cfg(cls)) == f"dataset._target_={__name__}.{cls.__name__}: {CLASS_CASES[cls]}"


def test_dataset_class_probe_and_transforms():
    """Item 0, the last and up to 64 evenly spaced between are probed; shapes are compared after the transforms
    the split gets (a Resize to one size makes varied samples fine); transforms must return tensors; PIL inputs
    are read as uint8 tensors."""
    assert probe_indices(1) == [0] and probe_indices(5) == [0, 1, 2, 3, 4]
    many = probe_indices(1_000_000)
    assert len(many) == 66 and many[0] == 0 and many[-1] == 999_999
    resize = [{"_target_": "torchvision.transforms.v2.Resize", "size": [8, 8], "antialias": True}]
    splits = load_class(class_cfg(SizesVary, train_transforms=resize, eval_transforms=resize))
    assert len(splits.sets["train"][1]) == 10
    pil = [{"_target_": "torchvision.transforms.v2.ToPILImage"}]
    assert refusal(load_class, class_cfg(Items, eval_transforms=pil)) == (
        f"dataset: the transforms return a PIL.Image.Image for {__name__}.Items (train)[0], not a tensor: allowed "
        f"transforms that return a tensor (no ToPILImage last)")
    pictures = load_class(class_cfg(Pictures))
    assert pictures.sets["train"][0].read(4).dtype == torch.uint8 and pictures.scale == 255.0


def test_nan_item_through_the_command_line(refused):
    assert refused("dataset=torchvision", f"dataset._target_={__name__}.WithNaN", "dataset.train_kwargs={}",
                   "dataset.test_kwargs={}", "model=digits_cnn") == \
        f"lstsd: error: dataset._target_={__name__}.WithNaN: {CLASS_CASES[WithNaN]}"
