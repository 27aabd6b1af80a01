"""Bad input of every reader is one ConfigError line naming the file (or key) and the problem, before training:
the central check of every split (build_data), MNIST IDX files, GLUE TSV files, the embeddings file, the
published MNIST-1D pickle and lstsd-bench's arguments. Corrupt caches (derived data) are rebuilt, not fatal."""
import gzip
import logging
import os
import pickle
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import REPO, compose_cfg
from glue_fixtures import write_glue
from lstsd.config import DatasetConfig, validate
from lstsd.data import build_data
from lstsd.data.readers import mnist1d
from lstsd.data.types import tensors
from lstsd.data.readers.glue import load_glue
from lstsd.data.types import Splits, write_cache
from lstsd.data.readers.mnist1d import GeneratorArgs, load_arrays
from lstsd.data.readers.synmnist import digit_sources
from lstsd.data.readers.synthetic import SyntheticConfig
from lstsd.errors import ConfigError
from lstsd.models.text import read_embeddings
from lstsd.registry import DATASETS, Entry

GARBAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


def refused(call, *fragments) -> str:
    """The message of the ConfigError ``call()`` raises: one line holding every fragment."""
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    assert "\r" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ----------------------------------------------------------------------------------------- the central check
def reader_returning(monkeypatch, sets: dict, classes: int = 3, text=None):
    """A dataset ``bad`` whose reader returns ``sets`` as they are."""
    splits = Splits(sets, classes, mean=None, std=None, text=text)
    monkeypatch.setitem(DATASETS.discover().entries, "bad", Entry(lambda cfg: splits, DatasetConfig))
    return DatasetConfig(name="bad")


def images(n):
    return torch.zeros(n, 1, 4, 4)


GOOD_TEST = (images(2), torch.tensor([0, 1]))

SPLIT_CASES = {  # case: (training split, the message)
    "fewer_labels": ((images(100), torch.zeros(99, dtype=torch.int64)),
                     "dataset bad: split train has 100 inputs and 99 labels"),
    "more_labels": ((images(4), torch.zeros(5, dtype=torch.int64)),
                    "dataset bad: split train has 4 inputs and 5 labels"),
    "float_labels": (tensors(np.zeros((4, 1, 4, 4)), [0.0, 1.7, 2.0, 1.0]),
                     "dataset bad: split train has labels of dtype float64: allowed integers in [0, 3)"),
    "float_tensor_labels": ((images(2), torch.tensor([0.0, 1.0])), "split train has labels of dtype float32"),
    "bool_labels": (tensors(np.zeros((2, 1, 4, 4)), [True, False]), "split train has labels of dtype bool"),
    "string_labels": (tensors(np.zeros((2, 1, 4, 4)), ["cat", "dog"]), "split train has labels of dtype <U3"),
    "nested_labels": ((images(2), torch.zeros(2, 1, dtype=torch.int64)),
                      "split train has labels of shape (2, 1): allowed one integer per sample"),
    "out_of_range": ((images(5), torch.tensor([0, 1, 5, -1, 7])),
                     "dataset bad: split train has 3 label(s) outside [0, 3) (the first: 5)"),
    "negative": ((images(2), torch.tensor([-1, 0])), "has 1 label(s) outside [0, 3) (the first: -1)"),
    "empty": ((images(0), torch.zeros(0, dtype=torch.int64)), "dataset bad: split train is empty"),
}


@pytest.mark.parametrize("case", sorted(SPLIT_CASES))
def test_every_split_is_checked_after_the_reader(monkeypatch, case):
    train, message = SPLIT_CASES[case]
    cfg = reader_returning(monkeypatch, {"train": train, "test": GOOD_TEST})
    refused(lambda: build_data(cfg, 0, "cpu"), message)


def test_the_test_split_is_checked_too(monkeypatch):
    cfg = reader_returning(monkeypatch, {"train": GOOD_TEST, "test": (images(3), torch.tensor([0, 1]))})
    refused(lambda: build_data(cfg, 0, "cpu"), "dataset bad: split test has 3 inputs and 2 labels")
    cfg = reader_returning(monkeypatch, {"train": GOOD_TEST, "test": (images(0), torch.zeros(0, dtype=torch.int64))})
    refused(lambda: build_data(cfg, 0, "cpu"), "dataset bad: split test is empty")


def test_text_splits_are_counted_like_images(monkeypatch):
    texts = [("a b", None)] * 5
    cfg = reader_returning(monkeypatch, {"train": (texts, torch.zeros(4, dtype=torch.int64)), "test": GOOD_TEST},
                           text="single")
    refused(lambda: build_data(cfg, 0, "cpu"), "dataset bad: split train has 5 inputs and 4 labels")


def test_integer_labels_are_int64_and_floats_are_never_truncated():
    x, y = tensors(np.zeros((2, 1)), np.array([1, 2], dtype=np.uint8))
    assert y.dtype == torch.int64
    assert y.tolist() == [1, 2]
    assert tensors(np.zeros((2, 1)), [1.7, 0.2])[1].tolist() == [1.7, 0.2]  # left for check_splits to refuse


@pytest.mark.parametrize("n,fraction", [(5, 0.9999), (3, 0.9), (1, 0.1)])
def test_a_validation_fraction_that_leaves_no_training_sample(n, fraction):
    cfg = SyntheticConfig(name="synthetic", num_train=n, num_test=2, shape=[1, 4, 4], num_classes=2,
                          val_fraction=fraction)
    refused(lambda: build_data(cfg, 0, "cpu"),
            f"dataset.val_fraction={fraction} is invalid: it leaves 0 training samples of {n}")
    keeps_one = SyntheticConfig(name="synthetic", num_train=n + 1, num_test=2, shape=[1, 4, 4], num_classes=2,
                                val_fraction=(n - 0.4) / (n + 1))  # rounds to n validation samples: 1 left
    assert build_data(keeps_one, 0, "cpu").info.num_train == 1


def test_a_validation_fraction_that_leaves_no_training_sample_is_one_line(refused):
    line = refused("dataset=synthetic", "dataset.num_train=5", "dataset.val_fraction=0.9999", "model=digits_cnn",
                   "dataset.shape=[1,8,8]", "trainer.epochs=1")
    assert line == ("lstsd: error: dataset.val_fraction=0.9999 is invalid: it leaves 0 training samples of 5 "
                    "(all 5 go to the validation split): allowed a smaller fraction")


# ------------------------------------------------------------------------------------------- MNIST IDX files
def idx(array: np.ndarray, code: int = 8) -> bytes:
    """The IDX format: two zero bytes, the type code, ndim, big-endian sizes, then the data."""
    return bytes([0, 0, code, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape) + \
        array.astype(np.uint8).tobytes()


def write_mnist(root, gz=False):
    """A tiny MNIST under root/MNIST/raw: 3 images of each digit; {name: path}."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    labels = np.repeat(np.arange(10), 3)
    pixels = np.broadcast_to((20 * labels + 10)[:, None, None], (30, 28, 28))
    paths = {}
    for prefix in ("train", "t10k"):
        for kind, array in (("images-idx3", pixels), ("labels-idx1", labels)):
            path = raw / f"{prefix}-{kind}-ubyte{'.gz' if gz else ''}"
            (gzip.open if gz else open)(path, "wb").write(idx(array))
            paths[path.name.removesuffix(".gz")] = path
    return paths


LABELS = np.repeat(np.arange(10), 3)
IMAGES = idx(np.zeros((30, 28, 28)))
IDX_CASES = {  # case: (file, contents, fragment)
    "empty": ("train-images-idx3-ubyte", b"", "is not an MNIST IDX file: the file is empty"),
    "garbage": ("train-images-idx3-ubyte", GARBAGE,
                "is not an MNIST IDX file: it starts with the bytes 89 50 4e 47, not an IDX header"),
    "short_header": ("t10k-labels-idx1-ubyte", b"\x00\x00", "its header is truncated (2 bytes)"),
    "truncated_header": ("train-images-idx3-ubyte", IMAGES[:10],
                         "its header is truncated (10 bytes, 16 needed for 3 dimensions)"),
    "truncated_data": ("train-images-idx3-ubyte", IMAGES[:-100],
                       "its header says 30 x 28 x 28 values, the file holds 23420 bytes after the header"),
    "trailing_bytes": ("t10k-labels-idx1-ubyte", idx(LABELS) + b"\x00", "its header says 30 values, the file holds 31"),
    "float_code": ("train-images-idx3-ubyte", idx(np.zeros((30, 28, 28)), code=0x0D),
                   "its data type code is 0x0d: allowed 0x08 (unsigned bytes, as MNIST's)"),
    "labels_as_images": ("train-labels-idx1-ubyte", IMAGES, "it has 3 dimension(s): allowed 1 (labels)"),
    "images_as_labels": ("t10k-images-idx3-ubyte", idx(LABELS), "it has 1 dimension(s): allowed 3 (images)"),
    "fewer_labels": ("train-labels-idx1-ubyte", idx(LABELS[:-1]),
                     "is not an MNIST label file: it holds 29 labels for the 30 images of train-images-idx3-ubyte"),
    "label_10": ("t10k-labels-idx1-ubyte", idx(np.minimum(LABELS + 1, 10)),
                 "it holds the label 10: allowed digits 0..9"),
    "missing_digit": ("train-labels-idx1-ubyte", idx(np.minimum(LABELS, 8)), "it holds no image of the digit(s) 9"),
}


@pytest.mark.parametrize("case", sorted(IDX_CASES))
def test_malformed_idx_file_is_one_line_naming_it(tmp_path, case):
    name, contents, fragment = IDX_CASES[case]
    path = write_mnist(tmp_path)[name]
    path.write_bytes(contents)
    refused(lambda: digit_sources(str(tmp_path)), f"dataset.root: {path.resolve()} is not an MNIST ", fragment)


@pytest.mark.parametrize("contents,fragment", [
    (GARBAGE, "it cannot be read (BadGzipFile: Not a gzipped file"),
    (gzip.compress(IMAGES)[:-10], "it cannot be read (EOFError: Compressed file ended"),
    (gzip.compress(IMAGES[:-1]), "its header says 30 x 28 x 28 values, the file holds 23519"),
], ids=["not_gzip", "cut_stream", "short_data"])
def test_malformed_gzipped_idx_file(tmp_path, contents, fragment):
    path = write_mnist(tmp_path, gz=True)["train-images-idx3-ubyte"]
    path.write_bytes(contents)
    refused(lambda: digit_sources(str(tmp_path)), f"dataset.root: {path.resolve()} is not an MNIST IDX file: ",
            fragment)


def test_well_formed_idx_files_still_read(tmp_path):
    write_mnist(tmp_path, gz=True)
    sources, name = digit_sources(str(tmp_path))
    assert name == "mnist"
    assert sources["train"][0].shape == (30, 28, 28)
    assert (sources["test"][1].tolist() == \
        LABELS.tolist())


# ------------------------------------------------------------------------------------------------ GLUE TSV
def read_glue(root, name="glue_rte", folder="RTE"):
    return load_glue(SimpleNamespace(root=str(root), folder=folder), name)


TSV_CASES = {  # case: (task, folder, file, contents, fragment)
    "empty": ("glue_rte", "RTE", "dev.tsv", b"", "is not an official GLUE RTE file: the file is empty"),
    "blank_lines": ("glue_sst2", "SST-2", "train.tsv", b"\n\r\n \n",
                    "is not an official GLUE SST-2 file: the file is empty"),
    "header_only": ("glue_rte", "RTE", "train.tsv", b"index\tsentence1\tsentence2\tlabel\n",
                    "is not an official GLUE RTE file: it holds a header but no rows"),
    "cola_empty": ("glue_cola", "CoLA", "train.tsv", b"", "is not an official GLUE CoLA file: the file is empty"),
    "latin1": ("glue_sst2", "SST-2", "dev.tsv", "sentence\tlabel\na fine film\t1\nun caf\u00e9\t0\n".encode("latin-1"),
               "is not an official GLUE SST-2 file: line 3 is not UTF-8 text (the byte 0xe9)"),
    "binary": ("glue_mrpc", "MRPC", "train.tsv", GARBAGE, "is not an official GLUE MRPC file: line 1 is not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(TSV_CASES))
def test_malformed_tsv_is_one_line_naming_it(tmp_path, case):
    name, folder, file, contents, fragment = TSV_CASES[case]
    write_glue(tmp_path)
    path = tmp_path / folder / file
    path.write_bytes(contents)
    refused(lambda: read_glue(tmp_path, name, folder), f"dataset.root: {path.resolve()} ", fragment)


def test_tsv_row_errors_are_kept(tmp_path):
    write_glue(tmp_path)
    dev = tmp_path / "RTE" / "dev.tsv"
    dev.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    refused(lambda: read_glue(tmp_path), f"{dev}:2 has the label 'maybe': allowed one of entailment, not_entailment")
    dev.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two\n")
    refused(lambda: read_glue(tmp_path), f"{dev}:3 has 2 tab-separated fields, not 4 as an official GLUE RTE file")


# ------------------------------------------------------------------------------------------------- caches
@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    return write_glue(tmp_path_factory.mktemp("glue"))


def spy_on_replace(monkeypatch) -> list:
    """The temporary names that os.replace moves into place, recorded."""
    moved, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: moved.append(str(src)) or real(src, dst))
    return moved


def corruptions(path, like: bytes, wrong_contents):
    """Garbage, a truncated copy, an empty file, and a well-formed file of the wrong contents."""
    return {"garbage": lambda: path.write_bytes(GARBAGE), "truncated": lambda: path.write_bytes(like[:len(like) // 2]),
            "empty": lambda: path.write_bytes(b""), "wrong_contents": wrong_contents}


def test_corrupt_token_cache_is_rebuilt(glue, tmp_path, monkeypatch, caplog):
    conf = validate(compose_cfg(f"dataset.root={glue}", f"dataset.cache_dir={tmp_path}", "dataset=glue_rte",
                                "model=textcnn", "dataset.max_length=8"))
    moved = spy_on_replace(monkeypatch)
    first = build_data(conf.dataset, 0, "cpu", model_cfg=conf.model)
    (path,) = tmp_path.iterdir()
    assert len(moved) == 1
    assert moved[0].startswith(f"{path}.")
    assert f".{os.getpid()}." in moved[0]
    assert moved[0].endswith(".tmp")
    good = path.read_bytes()
    cases = corruptions(path, good, lambda: torch.save({"train": torch.zeros(3, 3, 8)}, path))
    cases["wrong_shapes"] = lambda: torch.save({k: v[:, :2] for k, v in torch.load(
        tmp_path / "good.pt", weights_only=True).items()}, path)
    (tmp_path / "good.pt").write_bytes(good)
    for case, corrupt in cases.items():
        corrupt()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            again = build_data(conf.dataset, 0, "cpu", model_cfg=conf.model)
        assert f"tokenised cache {path}: " in caplog.text, case
        assert "encoding again" in caplog.text, case
        assert torch.equal(again.train.x, first.train.x), case
        assert torch.equal(again.evals["test"].x, first.evals["test"].x), case
        assert torch.equal(torch.load(path, weights_only=True)["train"], first.train.x.cpu()), case  # replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, "good.pt"])  # no temporary left


def test_corrupt_mnist1d_cache_is_rebuilt(tmp_path, monkeypatch, caplog):
    cfg = validate(compose_cfg("dataset=mnist1d", f"dataset.root={tmp_path}", "dataset.num_samples=100")).dataset
    moved = spy_on_replace(monkeypatch)
    first = load_arrays(cfg)
    path = tmp_path / "mnist1d" / f"{GeneratorArgs.of(cfg).key()}.npz"
    assert len(moved) == 1
    assert moved[0].startswith(f"{path}.")
    assert f".{os.getpid()}." in moved[0]
    assert moved[0].endswith(".tmp")
    good = path.read_bytes()
    cases = corruptions(path, good, lambda: np.savez(path, x=first["x"][:, :5], y=first["y"],
                                                     x_test=first["x_test"], y_test=first["y_test"]))
    cases["float_labels"] = lambda: np.savez(path, **dict(first, y=first["y"] + 0.5))
    for case, corrupt in cases.items():
        corrupt()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            again = load_arrays(cfg)
        assert f"{path} is not a usable MNIST-1D cache" in caplog.text, case
        assert "generating it again" in caplog.text, case
        assert all(np.array_equal(first[k], again[k]) for k in first), case
        assert path.read_bytes() == good, case
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_a_cache_that_cannot_be_written_is_a_warning(tmp_path, caplog):
    def fail(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with caplog.at_level(logging.WARNING):
        write_cache(tmp_path / "c.pt", fail, "tokenised text")
    assert "tokenised text not cached at" in caplog.text
    assert "No space left on device" in caplog.text
    assert list(tmp_path.iterdir()) == []  # neither the cache nor its temporary


# ------------------------------------------------------------------------------------- the embeddings file
VOCAB = ["<pad>", "<unk>", "<sep>", "the", "cat"]
EMBEDDING_CASES = {  # case: (contents, the message after "model.embeddings: <file>")
    "empty": (b"", " holds no word vectors: allowed a word2vec or GloVe text file (a word and model.embed_dim=3"),
    "header_only": (b"2 3\n", " holds no word vectors"),
    "latin1": ("the 1 2 3\ncaf\u00e9 1 2 3\n".encode("latin-1"), ":2 is not UTF-8 text (the byte 0xe9 at column 4)"),
    "binary": (GARBAGE, ":1 is not UTF-8 text (the byte 0x89 at column 1)"),
    "fewer_values": (b"the 1 2 3\nzebra 1 2\n", ":2 has 2 values: allowed model.embed_dim=3"),
    "more_values": (b"2 3\ncat 1 2 3 4\n", ":2 has 4 values: allowed model.embed_dim=3"),
    "word_only": (b"the 1 2 3\ncat\n", ":2 has 0 values"),
    "non_numeric": (b"the 1 2 3\ncat 1 x 3\n", ":2 has the value 'x' for 'cat': allowed numbers"),
    "non_finite": (b"cat 1 nan 3\n", ":1 has a non-finite value for 'cat': allowed finite numbers"),
}


@pytest.mark.parametrize("case", sorted(EMBEDDING_CASES))
def test_malformed_embeddings_file_is_one_line_naming_the_line(tmp_path, case):
    contents, rest = EMBEDDING_CASES[case]
    f = tmp_path / "vectors.txt"
    f.write_bytes(contents)
    refused(lambda: read_embeddings(str(f), VOCAB, 3), f"model.embeddings: {f}{rest}")


def test_embeddings_with_a_bom_blank_lines_and_crlf(tmp_path):
    f = tmp_path / "vectors.txt"
    f.write_bytes("\ufeff2 3\r\nthe 1 2 3\r\n\r\ncat 4 5 6 \r\n".encode())
    e = read_embeddings(str(f), VOCAB, 3)
    assert e[3].tolist() == [1, 2, 3]
    assert e[4].tolist() == [4, 5, 6]
    assert e[0].eq(0).all()


# ------------------------------------------------------------------------------ the published MNIST-1D pickle
@pytest.mark.parametrize("contents,fragment", [
    (b"", "(EOFError: Ran out of input)"),
    (GARBAGE, "(UnpicklingError: A load persistent id instruction was encountered, but no persistent_load"),
    (pickle.dumps({"x": np.zeros((4000, 40))})[:500], "(UnpicklingError: pickle data was truncated)"),
    (b"x,y\n1,2\n", "(UnpicklingError"),
    (pickle.dumps([1, 2]), "(ValueError: it holds a list, not a dict of arrays)"),
], ids=["empty", "garbage", "truncated", "text", "a_list"])
def test_malformed_published_mnist1d_is_one_line(tmp_path, contents, fragment):
    path = tmp_path / mnist1d.PUBLISHED_PICKLE
    path.write_bytes(contents)
    cfg = validate(compose_cfg("dataset=mnist1d", f"dataset.root={tmp_path}")).dataset
    refused(lambda: load_arrays(cfg), f"dataset.root: {path.resolve()} is not a readable copy of the published "
                                      f"MNIST-1D {fragment}", "remove it to generate the dataset instead")


# ----------------------------------------------------------------------------------------------- lstsd-bench
@pytest.mark.parametrize("args,fragment", [
    (["--methods", "vanilla,nonesuch"], "argument --methods: 'nonesuch' is invalid: allowed a method= option of "
                                        "lstsd (dlb, kd,"),
    (["--methods", "vanilla,lstsd,nonesuch:method.x=1"], "'nonesuch:method.x=1' is invalid"),
    (["--methods", "lstsd,sd"], "argument --methods: 'lstsd,sd' is invalid: allowed a list that holds vanilla"),
    (["--methods", ""], "argument --methods: '' is invalid"),
    (["--steps", "0"], "argument --steps: 0 is invalid: allowed an integer >= 1"),
    (["--rounds", "-2"], "argument --rounds: -2 is invalid: allowed an integer >= 1"),
    (["--warmup", "0"], "argument --warmup: 0 is invalid: allowed an integer >= 1"),
    (["--steps", "1.5"], "argument --steps: '1.5' is invalid: allowed an integer >= 1"),
])
def test_bench_arguments_are_argparse_errors(capsys, args, fragment):
    from lstsd.bench import main

    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert err.splitlines()[-1].startswith("lstsd-bench: error: "), err
    assert fragment in err.splitlines()[-1]
    assert "Traceback" not in err


def test_bench_unknown_method_exits_2_without_a_traceback():
    r = subprocess.run([sys.executable, "-m", "lstsd.bench", "--smoke", "--methods", "vanilla,nonesuch"], cwd=REPO,
                       capture_output=True, text=True, timeout=120, env={**os.environ, "WANDB_MODE": "disabled"})
    assert r.returncode == 2, r.stderr
    assert r.stdout == "", r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.splitlines()[-1].startswith("lstsd-bench: error: argument --methods: 'nonesuch' is invalid")


def test_bench_bad_method_override_is_one_line(capsys):
    from lstsd.bench import main

    with pytest.raises(SystemExit) as info:
        main(["--smoke", "--no-loader", "--methods", "vanilla,lstsd:method.nonesuch=1"])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert err.count("\n") == 1, err
    assert err.startswith("lstsd-bench: error: "), err
    assert "method.nonesuch" in err
