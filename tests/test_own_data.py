"""One's own data: ImageFolder trees, .npz files, Hugging Face datasets saved to disk, torchvision-style classes,
and the streaming loader that reads them (the in-memory loader's order, sharding and augmentation draws; exact
resume inside an epoch; independent of the number of workers). Every fixture is written by the tests."""
import json
import logging
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch

import test_preemption
from helpers import SignalAt, compose_cfg, read_metrics
from lstsd.config import validate
from lstsd.data import build_data
from lstsd.data.loaders.memory import MemoryLoader
from lstsd.data.types import Splits
from lstsd.data.loaders.stream import StreamLoader
from lstsd.data.workers import sample_seed
from lstsd.errors import ConfigError
from lstsd.training.run import run
from test_readers import write_mnist

CLASSES = ("ant", "bee", "cat", "dog")
SIZE = 16
CROP_FLIP = "dataset.train_transforms=[{_target_:torchvision.transforms.v2.RandomCrop,size:16,padding:4}," \
            "{_target_:torchvision.transforms.v2.RandomHorizontalFlip}]"
RESIZED_CROP = "dataset.train_transforms=[{_target_:torchvision.transforms.v2.RandomResizedCrop,size:12," \
               "antialias:true},{_target_:torchvision.transforms.v2.RandomHorizontalFlip}]"
CENTRE = "dataset.eval_transforms=[{_target_:torchvision.transforms.v2.CenterCrop,size:12}]"


def image(label: int, rng, size=SIZE) -> np.ndarray:
    """An RGB image whose colour says its class, plus noise."""
    base = np.zeros((size, size, 3), np.int64)
    base[..., label % 3] = 50 * (label + 1)
    return np.clip(base + rng.integers(0, 80, (size, size, 3)), 0, 255).astype(np.uint8)


def write_folder(root, n_train=48, n_val=12, size=SIZE, seed=0):
    """An ImageFolder tree of PNG files: root/train/<class>/<k>.png and root/val/<class>/<k>.png."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for k in range(n):
            c = k % len(CLASSES)
            folder = root / split / CLASSES[c]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image(c, rng, size)).save(folder / f"{k:04d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("folder"))


def folder_cfg(root, *overrides):
    return validate(compose_cfg("dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=16",
                                "dataset.resize_size=16", "dataset.batch_size=8", "model=digits_cnn", *overrides))


def batches(loader, epoch=0, start_step=0):
    return [(b.x.clone(), b.y.clone(), b.index.clone()) for b in loader.epoch(epoch, start_step)]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(p, q) for x, y in zip(a, b) for p, q in zip(x, y))


# ------------------------------------------------------------------------------------------------ the readers
def test_imagefolder_is_torchvisions_imagefolder(folder):
    """The same classes, files and order as torchvision's ImageFolder; an input is its file's pixels,
    normalised; labels in memory, images not (the split is a list of files)."""
    from torchvision.datasets import ImageFolder
    from torchvision.io import decode_image

    data = build_data(folder_cfg(folder, "dataset.train_transforms=[]", "dataset.eval_transforms=[]").dataset, 0,
                      "cpu")
    reference = ImageFolder(str(folder / "train"))
    assert (data.info.num_classes, data.info.num_train, data.info.num_test) == (4, 48, 12)
    assert data.info.input_shape == (3, SIZE, SIZE)
    assert data.train.y.tolist() == reference.targets
    assert isinstance(data.train, StreamLoader)
    assert [data.train.samples.where(i) for i in range(48)] == [p for p, _ in reference.samples]
    batch = data.train.get(torch.tensor([5, 17]), None)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    for x, i in zip(batch.x, (5, 17)):
        pixels = decode_image(reference.samples[i][0]).float() / 255
        assert torch.allclose(x, (pixels - mean) / std, atol=1e-5)
    assert batch.y.tolist() == [reference.targets[5], reference.targets[17]]
    assert not data.train.augment
    # a validation split carved from the files: read lazily as well, the same files as their labels say
    val = build_data(folder_cfg(folder, "dataset.val_fraction=0.25").dataset, 0, "cpu")
    assert (val.info.num_train, val.info.num_val) == (36, 12)
    assert isinstance(val.evals["val"], StreamLoader)
    names = [val.evals["val"].samples.where(i) for i in range(12)]
    assert val.evals["val"].y.tolist() == [CLASSES.index(n.split("/")[-2]) for n in names]
    assert not set(names) & {val.train.samples.where(i) for i in range(36)}
    # top-5 accuracy is what the evaluation adds where a dataset has more than five classes
    assert data.info.metrics(["acc"]) == ("acc",)
    assert (replace(data.info, num_classes=10).metrics(["acc", "f1"]) == \
        ("acc", "f1", "top5"))


def test_npz_arrays_channels_last_and_training_statistics(tmp_path):
    rng = np.random.default_rng(1)
    y_train, y_test = np.arange(30) % 3, np.arange(9) % 3
    x_train = rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)  # N x H x W x C (Keras' layout)
    x_test = rng.integers(0, 256, (9, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data = build_data(validate(compose_cfg("dataset=npz", f"dataset.path={tmp_path / 'd.npz'}",
                                           "model=digits_cnn")).dataset, 0, "cpu")
    assert (data.info.num_classes, data.info.num_train, data.info.input_shape) == (3, 30, (3, 8, 8))
    assert isinstance(data.train, MemoryLoader)
    assert data.train.x.dtype == torch.uint8
    assert torch.equal(data.evals["test"].x, torch.from_numpy(x_test).permute(0, 3, 1, 2))
    x = torch.cat([b.x for b in data.train.epoch(0)])  # normalised with the training split's statistics
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(3), atol=1e-2)
    # float sequences (N x C x L) are used as they are, normalised the same way
    np.savez(tmp_path / "s.npz", x_train=rng.normal(size=(20, 1, 40)), y_train=np.arange(20) % 2,
             x_test=rng.normal(size=(4, 1, 40)), y_test=np.arange(4) % 2)
    seq = build_data(validate(compose_cfg("dataset=npz", f"dataset.path={tmp_path / 's.npz'}")).dataset, 0, "cpu")
    assert seq.info.input_shape == (1, 40)
    assert seq.train.x.dtype == torch.float32


def write_hf(path, n_train=24, n_test=8):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(2)
    features = datasets.Features({"img": datasets.Image(), "fine": datasets.ClassLabel(names=list(CLASSES)),
                                  "text": datasets.Value("string")})
    parts = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = [k % 4 for k in range(n)]
        parts[split] = datasets.Dataset.from_dict(
            {"img": [Image.fromarray(image(c, rng)) for c in labels], "fine": labels,
             "text": [f"{CLASSES[c]} number {k}" for k, c in enumerate(labels)]}, features=features)
    datasets.DatasetDict(parts).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return write_hf(tmp_path_factory.mktemp("hf") / "saved")


def test_hugging_face_images_saved_to_disk(hf_dir):
    import datasets
    from torchvision.transforms.v2 import functional as TF

    cfg = validate(compose_cfg("dataset=hf", f"dataset.path={hf_dir}", "dataset.image_key=img",
                               "dataset.label_key=fine", "dataset.train_transforms=[]", "dataset.eval_transforms=[]",
                               "dataset.mean=[0,0,0]", "dataset.std=[1,1,1]", "model=digits_cnn"))
    data = build_data(cfg.dataset, 0, "cpu")
    source = datasets.load_from_disk(str(hf_dir))
    assert (data.info.num_classes, data.info.num_train, data.info.num_test) == (4, 24, 8)
    assert data.train.y.tolist() == list(source["train"]["fine"])
    test = torch.cat([b.x for b in data.evals["test"].epoch(0)])
    pixels = torch.stack([TF.pil_to_tensor(source["test"][i]["img"]) for i in range(8)]).float() / 255
    assert torch.allclose(test, pixels, atol=1e-6)


def test_hugging_face_text_saved_to_disk(hf_dir):
    cfg = validate(compose_cfg("dataset=hf_text", f"dataset.path={hf_dir}", "dataset.label_key=fine",
                               "model=textcnn", f"dataset.cache_dir={hf_dir.parent / 'cache'}"))
    data = build_data(cfg.dataset, 0, "cpu", model_cfg=cfg.model)
    assert (data.info.num_classes, data.info.num_train, data.info.num_test) == (4, 24, 8)
    assert {"ant", "bee", "number"} <= set(data.info.vocab)


def test_a_torchvision_class_by_target(tmp_path):
    """torchvision's MNIST (root, train, download given where its signature has them; its targets and
    classes), and FakeData (no targets attribute: labels read sample by sample; arguments by kwargs)."""
    from torchvision.datasets import MNIST

    write_mnist(tmp_path)
    cfg = validate(compose_cfg("dataset=torchvision", "dataset._target_=torchvision.datasets.MNIST",
                               f"dataset.root={tmp_path}", "model=lenet5", "dataset.batch_size=8"))
    data = build_data(cfg.dataset, 0, "cpu")
    reference = MNIST(str(tmp_path), train=False)
    assert (data.info.num_classes, data.info.num_train, data.info.input_shape) == (10, 30, (1, 28, 28))
    assert data.evals["test"].y.tolist() == reference.targets.tolist()
    x = torch.cat([b.x for b in data.evals["test"].epoch(0)])
    assert torch.allclose(x[:, 0], reference.data.float() / 255)
    fake = validate(compose_cfg("dataset=torchvision", "dataset._target_=torchvision.datasets.FakeData",
                                "dataset.kwargs={size:12,image_size:[3,8,8],num_classes:3}",
                                "dataset.train_kwargs={random_offset:0}", "dataset.test_kwargs={random_offset:100}",
                                "model=digits_cnn"))
    data = build_data(fake.dataset, 0, "cpu")
    assert (data.info.num_classes, data.info.num_train, data.info.input_shape) == (3, 12, (3, 8, 8))
    from torchvision.datasets import FakeData

    assert data.train.y.tolist() == [int(FakeData(12, (3, 8, 8), 3)[i][1]) for i in range(12)]


def test_imagenet_reader_crops_images_of_any_size_to_224(tmp_path):
    """dataset=imagenet: the ImageFolder reader with RandomResizedCrop 224 + flip for training and resize 256 +
    centre crop 224 for evaluation, on images of any size."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for split, shapes in (("train", [(40, 30), (30, 50), (64, 64)]), ("val", [(50, 40), (20, 60)])):
        for c, name in enumerate(("n01440764", "n01443537")):
            (tmp_path / split / name).mkdir(parents=True)
            for k, (h, w) in enumerate(shapes):
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / split / name /
                                                                                      f"{k}.JPEG", format="JPEG")
    cfg = validate(compose_cfg("dataset=imagenet", f"dataset.root={tmp_path}", "model=resnet18",
                               "dataset.num_workers=0"))
    assert [t["_target_"].rsplit(".", 1)[1] for t in cfg.dataset.train_transforms] == \
        ["RandomResizedCrop", "RandomHorizontalFlip"]
    assert ([(t["_target_"].rsplit(".", 1)[1], t["size"]) for t in cfg.dataset.eval_transforms] == \
        [("Resize", 256), ("CenterCrop", 224)])
    assert cfg.dataset.train_transforms[0]["size"] == 224
    data = build_data(cfg.dataset, 0, "cpu")
    assert data.info.input_shape == (3, 224, 224)
    assert data.train.augment
    assert [b.x.shape for b in data.evals["test"].epoch(0)] == [(4, 3, 224, 224)]


# ------------------------------------------------------------------------------------------ the stream loader
@pytest.mark.parametrize("source", ["imagefolder", "synthetic"])
def test_stream_fast_path_equals_the_memory_loader(folder, source):
    """Training transforms RandomCrop(size, padding=4) + RandomHorizontalFlip(): the workers decode, the device
    crops and flips with the in-memory loader's draws: the same batches bit for bit, with any number of
    workers, in every epoch, and the same get(index, generator)."""
    def make(loader, workers):
        keys = (f"dataset.loader={loader}", f"dataset.num_workers={workers}")
        if source == "imagefolder":
            cfg = folder_cfg(folder, CROP_FLIP, "dataset.eval_transforms=[]", *keys)
        else:
            cfg = validate(compose_cfg("dataset=synthetic", "dataset.pixels=uint8", "dataset.num_train=37",
                                       "dataset.shape=[3,12,12]", "dataset.batch_size=8", *keys))
        return build_data(cfg.dataset, 0, "cpu")

    memory = make("memory", 0)
    assert memory.train.augment
    assert isinstance(memory.train, MemoryLoader)
    for workers in (0, 2):
        stream = make("stream", workers)
        assert stream.train.fast
        assert isinstance(stream.train, StreamLoader)
        for epoch in (0, 1):
            assert same(batches(stream.train, epoch), batches(memory.train, epoch))
        assert same(batches(stream.evals["test"]), batches(memory.evals["test"]))
    index = torch.tensor([3, 1, 4, 1, 5])
    a, b = (d.train.get(index, torch.Generator().manual_seed(7)) for d in (stream, memory))
    assert torch.equal(a.x, b.x)
    assert torch.equal(a.y, b.y)


def test_stream_transforms_are_seeded_per_sample(folder):
    """Per-sample transforms (RandomResizedCrop + flip): the same batches for 0 and 2 workers; an epoch
    resumed at step k gives exactly the uninterrupted epoch's batches from k on; epochs differ; the run's own
    random generators are left as they were."""
    zero, two = (build_data(folder_cfg(folder, RESIZED_CROP, CENTRE, f"dataset.num_workers={w}").dataset, 0, "cpu")
                 for w in (0, 2))
    assert zero.train.augment
    assert not zero.train.fast
    assert zero.info.input_shape == (3, 12, 12)
    state = torch.get_rng_state()
    full = batches(zero.train, 1)
    assert torch.equal(torch.get_rng_state(), state)
    assert same(batches(two.train, 1), full)
    assert same(batches(zero.train, 1, start_step=4), full[4:])
    assert same(batches(two.train, 1, start_step=4), full[4:])
    assert len(full) == 6
    assert (not torch.equal(torch.cat([x for x, _, _ in full]),
                                              torch.cat([x for x, _, _ in batches(zero.train, 2)])))
    order = torch.cat([i for _, _, i in full])
    assert sorted(order.tolist()) == list(range(48))
    # the same sample in two epochs: other crops; the index fixes the label
    ev = batches(zero.evals["test"])
    assert same(batches(two.evals["test"]), ev)
    assert ev[0][0].shape == (12, 3, 12, 12)
    assert sample_seed(5, 1) != sample_seed(5, 2)
    assert sample_seed(5, 1) != sample_seed(6, 1)


def test_stream_shards_of_the_global_batches(folder):
    """2 processes: each reads its shard of every global batch, as the in-memory loader cuts them."""
    cfg = folder_cfg(folder, RESIZED_CROP, CENTRE, "dataset.num_workers=0", "dataset.batch_size=5").dataset
    ranks = [build_data(cfg, 0, "cpu", rank=r, world_size=2).train for r in (0, 1)]
    alone = build_data(cfg, 0, "cpu").train
    order = torch.cat([i for _, _, i in batches(alone, 0)])
    shards = [batches(loader, 0) for loader in ranks]
    assert len(ranks[0]) == len(shards[0]) == 5
    for k in range(5):  # global batch k: positions [10 k, 10 k + 10), halves to ranks 0 and 1 (the last: 4 + 4)
        assert torch.equal(torch.cat([shards[0][k][2], shards[1][k][2]]), order[10 * k:10 * k + 10])
    # a sample's augmentation depends on (seed, epoch, index) only: the same on either rank as alone
    x_alone = {int(i): x for b in batches(alone, 0) for x, i in zip(b[0], b[2])}
    for shard in shards:
        for x, _, index in shard:
            assert all(torch.equal(x[j], x_alone[int(i)]) for j, i in enumerate(index))


def test_in_memory_loaders_refuse_per_sample_transforms(folder):
    for overrides, fragment in [((RESIZED_CROP, "dataset.eval_transforms=[]"), "dataset.loader=memory is invalid "
                                 "with these dataset.train_transforms"),
                                ((CROP_FLIP, CENTRE), "dataset.loader=memory is invalid with dataset.eval_transforms")]:
        with pytest.raises(ConfigError, match=fragment):
            build_data(folder_cfg(folder, *overrides, "dataset.loader=memory").dataset, 0, "cpu")


def test_corrupt_image_named_or_skipped_with_a_warning(tmp_path, caplog):
    root = write_folder(tmp_path / "c", n_train=8, n_val=4)
    bad = root / "train" / "bee" / "0005.png"
    bad.write_bytes(bad.read_bytes()[:200])  # a PNG cut short
    with pytest.raises(ConfigError) as e:
        build_data(folder_cfg(root).dataset, 0, "cpu")
    assert str(e.value) == (f"dataset.root: {bad} is not a readable image (OSError: Truncated File Read): remove "
                            f"it, or set dataset.on_corrupt=skip to leave unreadable images out with a warning")
    with caplog.at_level(logging.WARNING):
        data = build_data(folder_cfg(root, "dataset.on_corrupt=skip").dataset, 0, "cpu")
    assert data.info.num_train == 7
    assert f"left out {bad}" in caplog.text
    assert str(bad) not in [data.train.samples.where(i) for i in range(7)]
    # verify=none: found while training, the run stops naming the file (exit code 1)
    data = build_data(folder_cfg(root, "dataset.verify=none", "dataset.num_workers=0").dataset, 0, "cpu")
    from lstsd.errors import TrainingError

    with pytest.raises(TrainingError) as e:
        batches(data.train)
    assert str(e.value) == f"dataset: {bad} cannot be decoded (OSError: image file is truncated)"


# -------------------------------------------------------------------------------------------- whole runs
def topk_args(folder, workers: int, batch_size: int = 8) -> tuple:
    return ("method=lstsd", "method.minigen_epochs=1", "method.bank_store=probs", "method.bank_topk=2",
            "dataset=imagefolder", f"dataset.root={folder}", f"dataset.batch_size={batch_size}",
            f"dataset.num_workers={workers}",
            "model=digits_cnn", "model.dropout=0.2", "trainer.epochs=3", "trainer.progress=false", "trainer.threads=1",
            RESIZED_CROP, CENTRE)


@pytest.fixture(scope="module")
def topk_run(folder, tmp_path_factory):
    """LSTSD with top-2 probability banks on PNG files read by 2 workers, 3 epochs of 6 steps."""
    run_dir = tmp_path_factory.mktemp("topk")
    return run_dir, run(compose_cfg(*topk_args(folder, 2)), run_dir)


def test_lstsd_top_k_banks_through_the_stream_loader(folder, topk_run, tmp_path):
    """It trains, its banks hold 2 classes of every sample, and the run is the same with the files read in the
    main process."""
    run_dir, res = topk_run
    assert res["status"] == "completed"
    assert res["dataset"] == "imagefolder"
    assert res["input_shape"] == [3, 12, 12]
    state = torch.load(run_dir / "last.pt", weights_only=False)
    for kind in ("short", "long"):
        bank = state["method"][kind]
        assert bank["filled"].all()
        assert bank["values"].shape == (48, 2)
        assert bank["classes"].shape == (48, 2)
    run(compose_cfg(*topk_args(folder, 0)), tmp_path)
    assert read_metrics(tmp_path) == read_metrics(run_dir)


def test_stop_inside_an_epoch_resumes_exactly_on_the_stream_loader(folder, topk_run, tmp_path):
    """A stop signal at step 8 (inside epoch 2, 2 workers reading ahead): the checkpoint records the position;
    the relaunched run reads the rest of the epoch from there and ends as the uninterrupted one (as
    tests/test_engine.py checks the in-memory loader)."""
    with pytest.raises(KeyboardInterrupt):
        run(compose_cfg(*topk_args(folder, 2)), tmp_path, callbacks=[SignalAt(8)])
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert (state["epoch"], state["global_step"], state["in_epoch"]["step"]) == (1, 8, 2)
    resumed = run(compose_cfg(*topk_args(folder, 2)), tmp_path)
    assert test_preemption.strip_time(resumed) == test_preemption.strip_time(topk_run[1])
    assert read_metrics(tmp_path) == read_metrics(topk_run[0])


@pytest.mark.slow
def test_stop_signal_inside_an_epoch_resumes_exactly_in_a_real_process(folder, tmp_path, monkeypatch):
    """A real SIGTERM inside an epoch of a run streaming PNG files with 2 workers (test_preemption's helpers):
    checkpointed there; relaunched, it ends with the uninterrupted run's results.json."""
    args = topk_args(folder, 2, batch_size=2)  # 24 steps an epoch
    monkeypatch.setattr(test_preemption, "ARGS", args)
    reference = run(compose_cfg(*args), tmp_path / "full")
    code = test_preemption.interrupt(tmp_path / "cut", signal.SIGTERM, after_epochs=1, delay=0.05).returncode
    assert code == -signal.SIGTERM
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    assert state["epoch"] == 1
    assert state["in_epoch"] is not None
    assert 0 < state["in_epoch"]["step"] < 24
    proc = test_preemption.launch(tmp_path / "cut")  # at once: the stopped run's workers do not hold its lock
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    resumed = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert test_preemption.strip_time(resumed) == test_preemption.strip_time(reference)


# -------------------------------------------------------------------------------------------------- bad input
def bad_fixtures(root):
    """{case: (overrides, the error line's text)} over files written under ``root``."""
    no_train = root / "no_train"
    (no_train / "val" / "ant").mkdir(parents=True)
    lonely = write_folder(root / "lonely", n_train=8, n_val=4)
    for f in (lonely / "val" / "dog").iterdir():
        f.unlink()
    (lonely / "val" / "dog").rmdir()
    corrupt = write_folder(root / "corrupt", n_train=8, n_val=4)
    good = write_folder(root / "good", n_train=8, n_val=4)
    (corrupt / "val" / "cat" / "0002.png").write_bytes(b"not an image at all")
    np.savez(root / "three.npz", x_train=np.zeros((4, 1, 8, 8), np.uint8), y_train=np.zeros(4, int),
             x_test=np.zeros((2, 1, 8, 8), np.uint8))
    hf = write_hf(root / "hf", n_train=4, n_test=4)
    common = ("model=digits_cnn", "dataset.image_size=16", "dataset.resize_size=16")
    return {
        "root_without_train": (("dataset=imagefolder", f"dataset.root={no_train}", *common),
                               f"dataset.root: {no_train} has no train/ folder: expected the ImageFolder layout "
                               f"{no_train}/train/<class>/<image> and {no_train}/val/<class>/<image>"),
        "class_not_in_val": (("dataset=imagefolder", f"dataset.root={lonely}", *common),
                             f"dataset.root: class folder 'dog' is in {lonely / 'train'} but not in {lonely / 'val'}: "
                             f"both must hold the same class folders"),
        "corrupt_image": (("dataset=imagefolder", f"dataset.root={corrupt}", *common),
                          f"dataset.root: {corrupt / 'val' / 'cat' / '0002.png'} is not an image (Pillow cannot "
                          f"identify its format): remove it, or set dataset.on_corrupt=skip"),
        "target_not_importable": (("dataset=torchvision", "dataset._target_=torchvision.datasets.NoSuchSet",
                                   "model=digits_cnn"),
                                  "dataset._target_='torchvision.datasets.NoSuchSet' is invalid: it cannot be "
                                  "imported"),
        "target_not_a_dataset": (("dataset=torchvision", "dataset._target_=datetime.date.today",
                                  "dataset.train_kwargs={}", "dataset.test_kwargs={}", "model=digits_cnn"),
                                 "dataset._target_='datetime.date.today' is invalid: it returned a date, not a "
                                 "dataset"),
        "hf_column_missing": (("dataset=hf", f"dataset.path={hf}", "dataset.image_key=picture",
                               "dataset.label_key=fine", *common),
                              f"dataset.image_key='picture' is invalid: allowed a column of {hf} (split train: img, "
                              f"fine, text)"),
        "npz_array_missing": (("dataset=npz", f"dataset.path={root / 'three.npz'}", "model=digits_cnn"),
                              f"dataset.path: {root / 'three.npz'} has no array 'y_test' (it holds x_train, y_train, "
                              f"x_test): expected x_train, y_train, x_test, y_test"),
        "transform_not_importable": (("dataset=imagefolder", f"dataset.root={good}", *common,
                                      "dataset.train_transforms=[{_target_:torchvision.transforms.v2.NoSuch}]"),
                                     "dataset.train_transforms[0]: cannot build torchvision.transforms.v2.NoSuch "
                                     "(ImportError: "),
        "transforms_refuse_the_images": (("dataset=imagefolder", f"dataset.root={good}", *common,
                                          "dataset.train_transforms=[{_target_:torchvision.transforms.v2.RandomCrop,"
                                          "size:32}]"),
                                         f"dataset: the transforms failed on {good / 'train' / 'ant' / '0000.png'} "
                                         f"(ValueError: "),
        "memory_with_resized_crop": (("dataset=imagefolder", f"dataset.root={good}", "dataset.loader=memory",
                                      *common),
                                     "dataset.loader=memory is invalid with these dataset.train_transforms"),
    }


@pytest.fixture(scope="module")
def bad_cases(tmp_path_factory):
    return bad_fixtures(tmp_path_factory.mktemp("bad"))


CASES = ["root_without_train", "class_not_in_val", "corrupt_image", "target_not_importable", "target_not_a_dataset",
         "hf_column_missing", "npz_array_missing", "transform_not_importable",
         "transforms_refuse_the_images", "memory_with_resized_crop"]


@pytest.mark.parametrize("case", CASES)
def test_bad_data_exit_2_one_line(bad_cases, case, refused):
    """Each bad input stops before training: exit code 2, one line naming the file or key, no traceback (the
    console script's main, in process, as tests/test_config_cli.py runs its list)."""
    args, fragment = bad_cases[case]
    assert fragment in refused(*args)


def test_stream_loader_on_any_split_in_memory():
    """dataset.loader=stream over tensors (any dataset): the in-memory loader's batches, without augmentation."""
    x, y = torch.randn(21, 2, 5), torch.arange(21) % 3
    splits = Splits({"train": (x, y), "test": (x[:7], y[:7])}, 3, mean=(0.1, 0.2), std=(1.5, 2.0))
    kw = dict(augment=False, shuffle=True, seed=4)
    a = MemoryLoader("train", splits, 4, "cpu", **kw)
    b = StreamLoader("train", splits, 4, "cpu", num_workers=0, **kw)
    assert same(batches(a, 3), batches(b, 3))
    assert len(a) == len(b) == 6
    assert b.num_samples == 21
