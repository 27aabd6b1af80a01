"""The NLP track: GLUE readers (official TSV and a Hugging Face copy), tokenisers, text models, metrics, and
the methods unchanged on text (LSTSD Table 2)."""
import json

import pytest
import torch

from helpers import compose_cfg, read_metrics, run_cli
from glue_fixtures import COLA_ROWS, MRPC_ROWS, N_DEV, RTE_ROWS, SST2_ROWS, write_glue, write_tiny_bert
from lstsd.config import validate
from lstsd.errors import ConfigError
from lstsd.data import build_data
from lstsd.data.readers.glue import read_tsv
from lstsd.training.run import run

pytest.importorskip("transformers")

ROWS = {"glue_rte": RTE_ROWS, "glue_mrpc": MRPC_ROWS, "glue_sst2": SST2_ROWS, "glue_cola": COLA_ROWS}
FOLDERS = {"glue_rte": "RTE", "glue_mrpc": "MRPC", "glue_sst2": "SST-2", "glue_cola": "CoLA"}
RTE_LABELS = {"entailment": 0, "not_entailment": 1}


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    return write_glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("bert"))


def text_cfg(glue, *overrides):
    return compose_cfg("dataset.root=" + str(glue), "dataset.cache_dir=" + str(glue / "cache"), "trainer.epochs=2",
                       "trainer.progress=false", *overrides)


def expected(name: str, split: str):
    rows = ROWS[name][:-N_DEV] if split == "train" else ROWS[name][-N_DEV:]
    labels = [RTE_LABELS[y] if name == "glue_rte" else int(y) for _, _, y in rows]
    return [(s1, s2) for s1, s2, _ in rows], labels


@pytest.mark.parametrize("name", list(ROWS))
def test_official_tsv_read_verbatim(glue, name):
    """Tabs only: quotes (even an unbalanced one) stay inside the sentence; headers skipped (CoLA has none)."""
    for split, file in (("train", "train.tsv"), ("test", "dev.tsv")):
        texts, y = read_tsv(glue / FOLDERS[name] / file, name)
        want_texts, want_y = expected(name, split)
        assert texts == want_texts
        assert y.tolist() == want_y
    assert any('"' in s1 for s1, _ in texts)


def test_hf_copy_reads_like_the_tsv(glue, tmp_path):
    datasets = pytest.importorskip("datasets")
    from lstsd.data.readers.glue import load_glue

    for name, folder in (("glue_mrpc", "MRPC"), ("glue_cola", "CoLA")):
        copy = {}
        for split, ours in (("train", "train"), ("validation", "test")):
            texts, y = expected(name, ours)
            cols = {"sentence1": [a for a, _ in texts], "sentence2": [b for _, b in texts]} if name == "glue_mrpc" \
                else {"sentence": [a for a, _ in texts]}
            copy[split] = datasets.Dataset.from_dict(cols | {"label": y, "idx": list(range(len(y)))})
        datasets.DatasetDict(copy).save_to_disk(str(tmp_path / folder))
        cfg = validate(compose_cfg(f"dataset={name}", "model=textcnn", f"dataset.root={tmp_path}")).dataset
        hf, tsv = load_glue(cfg, name), load_glue(validate(text_cfg(glue, f"dataset={name}", "model=textcnn")).dataset,
                                                  name)
        for split in ("train", "test"):
            assert hf.sets[split][0] == tsv.sets[split][0]
            assert torch.equal(hf.sets[split][1], tsv.sets[split][1])


def test_word_tokeniser_and_vocabulary(glue):
    """textcnn: Kim's clean_str, vocabulary of the training split by frequency, pairs as s1 <sep> s2."""
    from lstsd.data.text import clean_str

    assert clean_str('He said "isn\'t it, (great)?!') == ["he", "said", "is", "n't", "it", ",", "(", "great", ")",
                                                         "?", "!"]
    conf = validate(text_cfg(glue, "dataset=glue_rte", "model=textcnn"))
    data = build_data(conf.dataset, 0, "cpu", model_cfg=conf.model)
    vocab = data.info.vocab
    assert vocab[:3] == ["<pad>", "<unk>", "<sep>"]
    train_words = [w for s1, s2 in expected("glue_rte", "train")[0] for w in clean_str(s1) + clean_str(s2)]
    counts = [train_words.count(w) for w in vocab[3:]]
    assert counts == sorted(counts, reverse=True)
    assert set(vocab[3:]) == set(train_words)
    x = data.train.x  # N x 3 x L, in the training split's order
    s1, s2 = expected("glue_rte", "train")[0][0]
    ids = [vocab.index(w) for w in clean_str(s1)] + [2] + [vocab.index(w) for w in clean_str(s2)]
    n = len(ids)
    assert x[0, 0, :n].tolist() == ids
    assert x[0, 0, n:].eq(0).all()
    assert x[0, 1, :n].tolist() == [0] * len(clean_str(s1)) + [1] * (n - len(clean_str(s1)))
    assert x[0, 2].tolist() == [1] * n + [0] * (x.shape[2] - n)
    assert x.shape[2] == max(int(r.sum()) for r in torch.cat([x[:, 2], data.evals["test"].x[:, 2]]))
    dev_words = {w for s1, s2 in expected("glue_rte", "test")[0] for w in clean_str(s1) + clean_str(s2)}
    unknown = dev_words - set(vocab)
    assert not unknown or (data.evals["test"].x[:, 0] == 1).any()  # dev-only words are <unk>


def test_long_pairs_are_truncated_longest_first(glue):
    """A long premise is cut, not the hypothesis after it (the transformers tokenisers' longest_first)."""
    from lstsd.data.text import WordEncoder, longest_first

    assert longest_first([1] * 10, [2] * 2, 7) == ([1] * 5, [2] * 2)
    assert longest_first([1] * 3, [2] * 9, 7) == ([1] * 3, [2] * 4)
    conf = validate(text_cfg(glue, "dataset=glue_rte", "model=textcnn", "dataset.max_length=8"))
    encoder = WordEncoder(conf.model, [("cat " * 200, "the dog"), ("a", None)], 8)
    (ids, types), = encoder([("cat " * 200, "the dog")])
    cat, the, dog = (encoder.ids[w] for w in ("cat", "the", "dog"))
    assert ids == [cat] * 5 + [2, the, dog]
    assert types == [0] * 5 + [1] * 3


def test_bad_hugging_face_copies_are_one_line_errors(tmp_path):
    datasets = pytest.importorskip("datasets")

    copy = {s: datasets.Dataset.from_dict({"sentence": ["a b", "c d"], "label": [0, 1]}) for s in ("train", "validation")}
    datasets.DatasetDict(copy).save_to_disk(str(tmp_path / "RTE"))  # SST-2's columns under RTE
    with pytest.raises(ConfigError, match=r"has the columns sentence, label: allowed a copy of GLUE RTE with "
                                          r"sentence1, sentence2, label"):
        run(compose_cfg("dataset=glue_rte", "model=textcnn", f"dataset.root={tmp_path}"), tmp_path / "run")
    copy["validation"] = datasets.Dataset.from_dict({"sentence": ["a b", "c d"], "label": [-1, -1]})
    datasets.DatasetDict(copy).save_to_disk(str(tmp_path / "SST-2"))  # GLUE's hidden test labels
    with pytest.raises(ConfigError, match=r"\(validation\) has labels in \[-1, -1\]: allowed 0..1"):
        run(compose_cfg("dataset=glue_sst2", "model=textcnn", f"dataset.root={tmp_path}"), tmp_path / "run")


def test_bert_tokeniser_pairs_and_segments(glue, bert_dir):
    from transformers import AutoTokenizer

    conf = validate(text_cfg(glue, "dataset=glue_mrpc", "model=bert", f"model.path={bert_dir}"))
    data = build_data(conf.dataset, 0, "cpu", model_cfg=conf.model)
    assert data.info.vocab is None
    tok = AutoTokenizer.from_pretrained(str(bert_dir))
    s1, s2 = expected("glue_mrpc", "test")[0][1]
    enc = tok(s1, s2)
    row, n = data.evals["test"].x[1], len(enc["input_ids"])
    assert row[0, :n].tolist() == enc["input_ids"]
    assert row[1, :n].tolist() == enc["token_type_ids"]
    assert enc["input_ids"][0] == tok.cls_token_id
    assert enc["input_ids"].count(tok.sep_token_id) == 2
    assert row[2].tolist() == [1] * n + [0] * (row.shape[1] - n)
    assert row[0, n:].eq(tok.pad_token_id).all()


def test_tokenisation_is_cached(glue, monkeypatch):
    import lstsd.data.text as text

    conf = validate(text_cfg(glue, "dataset=glue_rte", "model=textcnn", "dataset.max_length=8"))
    first = build_data(conf.dataset, 0, "cpu", model_cfg=conf.model)
    assert any(p.name.startswith("glue_rte_textcnn_") for p in (glue / "cache").iterdir())
    monkeypatch.setattr(text.WordEncoder, "__call__", lambda self, texts: pytest.fail("tokenised again"))
    again = build_data(conf.dataset, 0, "cpu", model_cfg=conf.model)
    assert torch.equal(first.train.x, again.train.x)
    assert first.train.x.shape[2] == 8  # pairs truncated


def test_pretrained_embeddings_file(glue, tmp_path):
    """model.embeddings: rows of a word2vec text file (header skipped) for the words it has, U[-0.25, 0.25] for the
    others (Kim 2014), <pad> zero; another dimension is a one-line error."""
    from lstsd.models import build_model
    from lstsd.models.text import read_embeddings

    f = tmp_path / "vectors.txt"
    f.write_text("3 4\ncat 1 2 3 4\nthe 0.5 0.5 0.5 0.5\nzebra 9 9 9 9\n")
    vocab = ["<pad>", "<unk>", "<sep>", "the", "cat", "dog"]
    e = read_embeddings(str(f), vocab, 4)
    assert e[4].tolist() == [1, 2, 3, 4]
    assert e[3].tolist() == [0.5] * 4
    assert e[0].eq(0).all()
    assert e[[1, 2, 5]].abs().le(0.25).all()
    assert e[5].abs().gt(0).all()
    with pytest.raises(ConfigError, match=r"vectors.txt:2 has 4 values: allowed model.embed_dim=5"):
        read_embeddings(str(f), vocab, 5)
    conf = validate(text_cfg(glue, "dataset=glue_sst2", "model=textcnn", f"model.embeddings={f}", "model.embed_dim=4"))
    data = build_data(conf.dataset, 0, "cpu", model_cfg=conf.model)
    model = build_model(conf.model, 2, data.info.input_shape, data.info.vocab)
    assert model.embed.weight[data.info.vocab.index("cat")].tolist() == [1, 2, 3, 4]


def test_metrics_match_scikit_learn():
    """evaluate(): acc, F1 of class 1 and Matthews correlation; y = 1 1 0 0 1, predicted 1 0 0 1 1: TP = 2,
    FN = 1, FP = 1, TN = 1, so acc = 60, F1 = 2 TP / (2 TP + FP + FN) = 66.67, MCC = (TP TN - FP FN) /
    sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN)) = 1/6."""
    from sklearn.metrics import f1_score, matthews_corrcoef

    from lstsd.data.loaders.memory import MemoryLoader
    from lstsd.data.types import Splits
    from lstsd.training.evaluation import evaluate

    y, p = torch.tensor([1, 1, 0, 0, 1]), torch.tensor([1, 0, 0, 1, 1])
    logits = torch.nn.functional.one_hot(p, 2).float()  # fed as they are (no normalisation): the model is identity
    loader = MemoryLoader("test", Splits({"test": (logits, y)}, 2, None, None), 2, "cpu", False, False, 0)
    out = evaluate(torch.nn.Identity(), loader, metrics=("acc", "f1", "mcc"))
    assert out["acc"] == pytest.approx(60.0)
    assert out["f1"] == pytest.approx(200 / 3) == pytest.approx(100 * f1_score(y, p))
    assert out["mcc"] == pytest.approx(100 / 6) == pytest.approx(100 * matthews_corrcoef(y, p))


@pytest.mark.parametrize("model", ["textcnn", "bert"])
def test_lstsd_end_to_end_on_text(glue, bert_dir, tmp_path, model):
    """LSTSD unchanged on text: banks fill with one row per training sentence; CoLA's headline is MCC."""
    extra = [f"model.path={bert_dir}", "optim=adam", "optim.lr=1e-3"] if model == "bert" else []
    cfg = text_cfg(glue, "dataset=glue_cola", f"model={model}", "method=lstsd_t1", "method.minigen_epochs=1",
                   "trainer.epochs=3", *extra)
    res = run(cfg, tmp_path)
    assert res["headline"] == "mcc"
    assert res["method"] == "lstsd_t1"
    assert res["model"] == model
    rows = read_metrics(tmp_path)
    assert {"test_acc", "test_mcc", "loss_kd_short", "loss_kd_long"} <= set(rows[-1])
    best = max(rows, key=lambda r: r["test_mcc"])
    assert res["test_mcc_best"] == best["test_mcc"]
    assert res["best_epoch"] == best["epoch"]
    assert res["test_mcc_final"] == rows[-1]["test_mcc"]
    assert res["test_acc_final"] == rows[-1]["test_acc"]
    banks = torch.load(tmp_path / "last.pt", weights_only=False)["method"]
    n_train = len(COLA_ROWS) - N_DEV
    assert banks["short"]["values"].shape == (n_train, 2)
    assert banks["short"]["filled"].all()  # a teacher per sentence
    assert banks["long"]["filled"].all()


def test_text_through_the_dataloader_path_equals_the_device_path(glue, tmp_path):
    """No augmentation on text and the same (seed, epoch) order: dataset.loader=torchvision trains identically."""
    base = ("dataset=glue_rte", "model=textcnn", "method=lstsd", "method.minigen_epochs=1")
    run(text_cfg(glue, *base), tmp_path / "memory")
    run(text_cfg(glue, *base, "dataset.loader=torchvision", "dataset.num_workers=0"), tmp_path / "torchvision")
    assert read_metrics(tmp_path / "memory") == read_metrics(tmp_path / "torchvision")


def test_mrpc_reports_f1_and_table2_reference(glue, tmp_path):
    from lstsd.report import report

    cfg = text_cfg(glue, "dataset=glue_mrpc", "model=textcnn", "method=vanilla", "name=lstsd_table2")
    res = run(cfg, tmp_path / "run")
    assert {"test_f1_final", "test_f1_best", "test_acc_final"} <= set(res)
    assert res["headline"] == "acc"
    table = report([tmp_path])
    assert "| final f1 |" in table.splitlines()[0]
    assert "| 70.83 |" in table  # Table 2: CNN vanilla MRPC


def test_experiment_table2_composes_every_cell(glue):
    """Both recipes with every task and method of the sweep: the paper's optimisers, batch sizes and T = 1."""
    for recipe, (optim, lr, batch) in {"table2_bert": ("torch.optim.Adam", 5e-5, 64),
                                       "table2_textcnn": ("torch.optim.SGD", 8e-3, 32)}.items():
        for dataset in ROWS:
            for method in ("vanilla", "mean_teacher", "snapshot_ensembles", "temporal_ensembling", "sd_t1",
                           "lstsd_t1"):
                conf = validate(compose_cfg("experiment=lstsd_table2", f"+recipe={recipe}", f"dataset={dataset}",
                                            f"method={method}", "model.path=bert-base-uncased", "model.download=true"))
                assert (conf.optim._target_, conf.optim.lr, conf.dataset.batch_size) == (optim, lr, batch)
                assert conf.trainer.epochs == 50
                assert conf.model.arch == recipe.split("_")[1]
                assert conf.method.label == method
                assert getattr(conf.method, "temperature", 1.0) == 1.0


def test_missing_embeddings_file(glue, tmp_path):
    with pytest.raises(ConfigError, match=r"model.embeddings='/nonexistent.txt' is invalid: allowed null or an "
                                          r"existing word-vector text file"):
        run(text_cfg(glue, "dataset=glue_sst2", "model=textcnn", "model.embeddings=/nonexistent.txt"), tmp_path)


def test_folder_without_the_files_and_a_malformed_row(glue, tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    with pytest.raises(ConfigError, match=r"GLUE RTE not found: expected .*RTE holding the official train.tsv"):
        run(compose_cfg("dataset=glue_rte", "model=textcnn", f"dataset.root={tmp_path}"), tmp_path / "run")
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tonly two\n")
    with pytest.raises(ConfigError, match=r"dev.tsv:2 has 2 tab-separated fields, not 4"):
        run(compose_cfg("dataset=glue_rte", "model=textcnn", f"dataset.root={tmp_path}"), tmp_path / "run")


def test_bert_max_length_beyond_its_positions(glue, bert_dir):
    conf = validate(text_cfg(glue, "dataset=glue_sst2", "model=bert", f"model.path={bert_dir}",
                             "dataset.max_length=512"))
    with pytest.raises(ConfigError, match=r"dataset.max_length=512 is invalid: allowed at most 128"):
        build_data(conf.dataset, 0, "cpu", model_cfg=conf.model)


def test_kd_teachers_on_text_read_the_students_tokens(glue, bert_dir, tmp_path):
    """A textcnn teacher run teaches a textcnn student of its task; another task's vocabulary, or another text
    model, is refused with one line."""
    run(text_cfg(glue, "dataset=glue_rte", "model=textcnn"), tmp_path / "teacher")
    kd = ("method=kd", f"method.teacher_run={tmp_path / 'teacher'}")
    res = run(text_cfg(glue, "dataset=glue_rte", "model=textcnn", *kd), tmp_path / "student")
    assert res["status"] == "completed"
    assert (res["vocab_sha256"] == json.loads(
        (tmp_path / "teacher" / "results.json").read_text())["vocab_sha256"])
    with pytest.raises(ConfigError, match=r"allowed a run with the student's vocabulary"):
        run(text_cfg(glue, "dataset=glue_cola", "model=textcnn", *kd), tmp_path / "other_task")
    with pytest.raises(ConfigError, match=r"allowed a run of the student's text model \(model.arch=bert"):
        run(text_cfg(glue, "dataset=glue_rte", "model=bert", f"model.path={bert_dir}", *kd), tmp_path / "bert")


def test_offline_bert_run_through_the_cli(glue, bert_dir, tmp_path):
    """HF_HUB_OFFLINE=1: a local checkpoint trains with no network; sentence pairs through the CLI."""
    r = run_cli("dataset=glue_rte", "model=bert", f"model.path={bert_dir}", f"dataset.root={glue}", "method=vanilla",
                "trainer.epochs=1", "optim=adam", f"hydra.run.dir={tmp_path}", HF_HUB_OFFLINE="1")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "results.json").read_text())["dataset"] == "glue_rte"
