"""Tokenisation of text datasets: raw sentences (or sentence pairs) -> one int64 tensor per split.

A text sample is stored as a ``3 x L`` row of token ids, token type (segment) ids and attention mask, padded to
the longest encoded sample of the task (at most ``dataset.max_length``), so the device-resident loader,
the per-sample banks and every method treat text exactly as images: batches are ``(x, y, index)``.

The tokeniser belongs to the model (``model.arch``):

- ``textcnn``: words (Kim 2014's ``clean_str``: lower case, punctuation and clitics split off), a vocabulary
  built from the training split (most frequent first; ``model.max_vocab`` keeps the top ones), ids
  ``<pad>`` = 0, ``<unk>`` = 1, ``<sep>`` = 2; a pair is ``sentence1 <sep> sentence2``;
- ``bert``: the checkpoint's own tokeniser from ``model.path`` (``[CLS] s1 [SEP] s2 [SEP]``, segment ids,
  longest-first truncation), loaded with ``local_files_only`` unless ``model.download=true``.

Encoding happens once per run and is cached in ``dataset.cache_dir`` under a key of the raw texts, the labels,
the tokeniser's identity and ``max_length``, so a sweep tokenises each task once.
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from lstsd.data.types import Splits, vocab_fingerprint, write_cache
from lstsd.errors import ConfigError, import_extra, one_line

log = logging.getLogger(__name__)

PAD, UNK, SEP = "<pad>", "<unk>", "<sep>"
CACHE_FORMAT = 2  # part of every cache key: raise it when tokenisation or the tensor layout changes


def clean_str(text: str) -> list[str]:
    """Kim (2014)'s tokenisation of a sentence (his ``clean_str``), lower-cased."""
    text = re.sub(r"[^A-Za-z0-9(),!?'`]", " ", text)
    text = re.sub(r"'s", " 's", text)
    text = re.sub(r"'ve", " 've", text)
    text = re.sub(r"n't", " n't", text)
    text = re.sub(r"'re", " 're", text)
    text = re.sub(r"'d", " 'd", text)
    text = re.sub(r"'ll", " 'll", text)
    for mark in ",!()?":
        text = text.replace(mark, f" {mark} ")
    return text.lower().split()


class WordEncoder:
    """``textcnn``'s word-level tokeniser over a vocabulary of the training split."""

    def __init__(self, model_cfg, train_texts: list, max_length: int):
        counts = collections.Counter(w for s1, s2 in train_texts for s in (s1, s2) if s for w in clean_str(s))
        words = sorted(counts, key=lambda w: (-counts[w], w))
        if model_cfg.max_vocab is not None:
            words = words[:model_cfg.max_vocab]
        self.vocab = [PAD, UNK, SEP, *words]
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.max_length = max_length
        self.min_length = max(model_cfg.filter_widths)  # the widest filter needs that many positions
        self.pad_id = 0
        self.key = {"tokeniser": "clean_str", "vocab": vocab_fingerprint(self.vocab)}

    def __call__(self, texts: list) -> list[tuple[list, list]]:
        out = []
        for s1, s2 in texts:
            first = [self.ids.get(w, 1) for w in clean_str(s1)]
            if s2 is None:
                out.append((first[:self.max_length], [0] * min(len(first), self.max_length)))
                continue
            second = [self.ids.get(w, 1) for w in clean_str(s2)]
            first, second = longest_first(first, second, self.max_length - 1)  # room for <sep>
            second = [self.ids[SEP]] + second
            out.append((first + second, [0] * len(first) + [1] * len(second)))
        return out


def longest_first(a: list, b: list, budget: int) -> tuple[list, list]:
    """Truncate the longer of two token lists, one token at a time, until both fit in ``budget`` (the
    transformers tokenisers' ``longest_first``): a long premise never pushes its hypothesis out."""
    while len(a) + len(b) > budget:
        if len(a) >= len(b):
            a = a[:-1]
        else:
            b = b[:-1]
    return a, b


class HFEncoder:
    """A transformers checkpoint's own tokeniser (``bert`` and any BERT-family model directory)."""

    def __init__(self, model_cfg, train_texts: list, max_length: int):
        from transformers import AutoConfig

        self.tokenizer = load_tokenizer(model_cfg)
        positions = getattr(AutoConfig.from_pretrained(model_dir(model_cfg), local_files_only=not model_cfg.download),
                            "max_position_embeddings", None)
        if positions is not None and max_length > positions:
            raise ConfigError(f"dataset.max_length={max_length} is invalid: allowed at most {positions}, the "
                              f"position embeddings of model.path={model_cfg.path}")
        self.vocab = None
        self.max_length = max_length
        self.min_length = 1
        self.pad_id = self.tokenizer.pad_token_id or 0
        # the whole tokeniser (vocabulary, normaliser, pre-tokeniser, special tokens) where it is a fast one
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        spec = backend.to_str() if backend is not None else json.dumps(
            [sorted(self.tokenizer.get_vocab().items()), repr(sorted(self.tokenizer.init_kwargs.items()))])
        self.key = {"tokeniser": type(self.tokenizer).__name__, "spec": hashlib.sha256(spec.encode()).hexdigest()}

    def __call__(self, texts: list) -> list[tuple[list, list]]:
        first = [s1 for s1, _ in texts]
        second = [s2 for _, s2 in texts] if texts and texts[0][1] is not None else None
        enc = self.tokenizer(first, second, truncation=True, max_length=self.max_length,
                             return_token_type_ids=True, return_attention_mask=False)
        return list(zip(enc["input_ids"], enc["token_type_ids"]))


ENCODERS: dict[str, Callable] = {"textcnn": WordEncoder, "bert": HFEncoder}  # model.arch -> its tokeniser


def model_dir(model_cfg) -> str:
    """``model.path`` checked: a local checkpoint directory (or, with ``model.download=true``, a hub name)."""
    import_extra("transformers", f"model={model_cfg.name}")
    path = Path(str(model_cfg.path)).expanduser() if model_cfg.path else None
    if path is not None and (path / "config.json").is_file():
        return str(path)
    if model_cfg.download and model_cfg.path:
        return str(model_cfg.path)
    raise ConfigError(f"model.path={model_cfg.path!r} is invalid: allowed a local transformers model directory "
                      f"(with config.json and the tokeniser's files), or a hub name with model.download=true")


def load_tokenizer(model_cfg):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir(model_cfg), local_files_only=not model_cfg.download)


def fingerprint(splits: Splits) -> str:
    h = hashlib.sha256()
    for name in sorted(splits.sets):
        texts, y = splits.sets[name]
        h.update(name.encode())
        for s1, s2 in texts:
            h.update(f"{s1}\t{s2}\n".encode())
        h.update(y.numpy().tobytes())
    return h.hexdigest()


def encode_splits(splits: Splits, dataset_cfg, model_cfg) -> tuple[Splits, Optional[list]]:
    """Every split as a ``N x 3 x L`` int64 tensor (ids, segment ids, mask), and the vocabulary (``textcnn``;
    None for a checkpoint's tokeniser). Read from the cache when the same texts were encoded the same way."""
    train_texts = splits.sets["train"][0]
    encoder = ENCODERS[model_cfg.arch](model_cfg, train_texts, dataset_cfg.max_length)
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, fingerprint(splits), encoder.key, dataset_cfg.max_length,
                                     encoder.min_length]).encode()).hexdigest()[:20]
    path = Path(dataset_cfg.cache_dir).expanduser() / f"{dataset_cfg.name}_{model_cfg.arch}_{key}.pt"
    tensors = load_cache(path, splits)
    if tensors is None:
        encoded = {name: encoder(texts) for name, (texts, _) in splits.sets.items()}
        length = max(encoder.min_length, max(len(ids) for rows in encoded.values() for ids, _ in rows))
        tensors = {name: pack(rows, length, encoder.pad_id) for name, rows in encoded.items()}
        save_cache(tensors, path)
    sets = {name: (tensors[name], y) for name, (_, y) in splits.sets.items()}
    return replace(splits, sets=sets), encoder.vocab


def load_cache(path: Path, splits: Splits) -> Optional[dict]:
    """The cached tensors, or None when there are none. A cache is derived data: one that cannot be read or whose
    tensors do not fit the splits (int64, ``N x 3 x L`` with each split's N and one L) is logged as a warning
    naming the file, then encoded again and the file replaced."""
    if not path.is_file():
        return None
    try:
        tensors = torch.load(path, weights_only=True)
        sizes = {name: len(y) for name, (_, y) in splits.sets.items()}
        fits = isinstance(tensors, dict) and set(tensors) == set(sizes) and all(
            isinstance(t, Tensor) and t.dtype == torch.int64 and t.dim() == 3 and t.shape[:2] == (sizes[name], 3)
            for name, t in tensors.items()) and len({t.shape[2] for t in tensors.values()}) == 1
        if fits:
            return tensors
        problem = "its tensors do not fit the splits"
    except Exception as e:  # noqa: BLE001 - whatever a damaged file raises, it is only a lost speed-up
        problem = f"unreadable ({type(e).__name__}: {one_line(e)})"
    log.warning(f"tokenised cache {path}: {problem}: encoding again")
    return None


def pack(rows: list[tuple[list, list]], length: int, pad_id: int) -> Tensor:
    """(ids, segment ids) rows -> ``N x 3 x length``: ids padded with ``pad_id``, segments and mask with 0."""
    out = torch.zeros(len(rows), 3, length, dtype=torch.int64)
    out[:, 0] = pad_id
    for i, (ids, types) in enumerate(rows):
        n = len(ids)
        out[i, 0, :n] = torch.tensor(ids, dtype=torch.int64)
        out[i, 1, :n] = torch.tensor(types, dtype=torch.int64)
        out[i, 2, :n] = 1
    return out


def save_cache(tensors: dict, path: Path) -> None:
    """Written atomically under a name of this process (processes of a sweep may encode the same task at once);
    a read-only place is only a lost speed-up."""
    write_cache(path, lambda f: torch.save(tensors, f), "tokenised text")
