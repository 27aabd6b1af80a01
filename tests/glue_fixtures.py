"""Tiny GLUE task folders in the official on-disk layout, and a tiny randomly initialised BERT directory."""
from pathlib import Path

# (sentence1, sentence2, label) per task, the dev rows last; quotes, apostrophes and unbalanced " inside and at
# the start of sentences, as the real files have (they are not CSV-quoted: a CSV reader would take an opening "
# as quoting and swallow the following lines)
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "home", "it", "is", "good", "bad", "movie", "film",
         "he", "said", "she", "was", "not", "very", "fun", "boring", "great", "this", "book", "read", "who", "saw"]


def sentence(i: int, length: int = 5) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(length))


RTE_ROWS = [(f'"{sentence(i)} quoted it' if i % 3 == 0 else f'{sentence(i)} "quoted" it', f"{sentence(i + 1, 3)} isn't", "entailment" if i % 2 else "not_entailment")
            for i in range(12)]
MRPC_ROWS = [(f'He said "{sentence(i, 4)}', sentence(i + 2, 4), str(i % 2)) for i in range(12)]
SST2_ROWS = [(f"{sentence(i, 6)} 's \"great" if i % 4 else f"\"{sentence(i, 6)}", None, str(i % 2)) for i in range(16)]
COLA_ROWS = [(f"{sentence(i, 4)} \"", None, str((i // 2) % 2)) for i in range(16)]
N_DEV = 4


def write_glue(root: Path) -> Path:
    """RTE, MRPC, SST-2 and CoLA folders with train.tsv and dev.tsv as GLUE's download script unpacks them; MRPC's
    header starts with a byte-order mark and SST-2 has Windows line ends, as some copies do."""
    def write(folder: str, name: str, header, rows):
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        lines = (["\t".join(header)] if header else []) + ["\t".join(r) for r in rows]
        bom, end = ("\ufeff" if folder == "MRPC" else ""), ("\r\n" if folder == "SST-2" else "\n")
        with open(d / name, "w", encoding="utf-8", newline="") as f:
            f.write(bom + end.join(lines) + end)

    for split, part in (("train.tsv", slice(None, -N_DEV)), ("dev.tsv", slice(-N_DEV, None))):
        write("RTE", split, ["index", "sentence1", "sentence2", "label"],
              [(str(i), s1, s2, y) for i, (s1, s2, y) in enumerate(RTE_ROWS[part])])
        write("MRPC", split, ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
              [(y, str(100 + i), str(200 + i), s1, s2) for i, (s1, s2, y) in enumerate(MRPC_ROWS[part])])
        write("SST-2", split, ["sentence", "label"], [(s1, y) for s1, _, y in SST2_ROWS[part]])
        write("CoLA", split, None, [("gj04", y, "" if y == "1" else "*", s1) for s1, _, y in COLA_ROWS[part]])
    return root


def write_tiny_bert(path: Path) -> Path:
    """A 2-layer, 32-wide BERT with random weights and a WordPiece vocabulary of the fixture words."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), '"', "'", "s", "n", "t", "##t",
             "##n", "isn"]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(str(path / "vocab.txt"), do_lower_case=True).save_pretrained(str(path))
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(str(path))
    return path
