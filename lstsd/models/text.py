"""Text models. Their input is a batch of ``3 x L`` token rows (ids, segment ids, attention mask) made by the
model's tokeniser (:mod:`lstsd.data.text`).

- ``textcnn``: Kim (2014)'s CNN for sentence classification: word embeddings (``model.embed_dim``, 300 as
  word2vec's; drawn from U[-0.25, 0.25] as in Kim's code, or initialised from ``model.embeddings``, a
  word2vec/GloVe text file, words it lacks drawn from that uniform), one 1-d convolution per filter width (3, 4, 5, with 100 feature maps
  each) and ReLU, max-over-time pooling, dropout 0.5 and a linear classifier. The embeddings are fine-tuned
  (Kim's "non-static"). Sentence pairs are fed as ``sentence1 <sep> sentence2``.
- ``bert``: a transformers checkpoint from a local directory (``model.path``; the LSTSD paper used 12-layer
  BERT-base) with a freshly initialised sequence-classification head: ``AutoModelForSequenceClassification``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

import torch
from torch import Tensor, nn

from lstsd.config import ModelConfig
from lstsd.data.text import ENCODERS, model_dir
from lstsd.errors import ConfigError, require, require_choice
from lstsd.registry import register_model

log = logging.getLogger(__name__)


@dataclass
class TextModelConfig(ModelConfig):
    """textcnn (Kim 2014) and bert (a local transformers checkpoint)."""
    kind: ClassVar[str] = "text"
    text_input: str = "pair"  # pair: sentence pairs accepted (textcnn: s1 <sep> s2; bert: segments); single
    path: Optional[str] = None  # bert: a local model directory (config.json, weights, tokeniser files)
    download: bool = False  # bert: allow a hub name in path (network); off: nothing is fetched
    embed_dim: int = 300  # textcnn
    embeddings: Optional[str] = None  # textcnn: word2vec/GloVe text file to initialise the embeddings
    filter_widths: list[int] = field(default_factory=lambda: [3, 4, 5])
    num_filters: int = 100
    max_vocab: Optional[int] = None  # textcnn: keep the most frequent words of the training split

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice("model.arch", self.arch, tuple(ENCODERS))
        require_choice("model.text_input", self.text_input, ("pair", "single"))
        if self.arch == "bert":
            model_dir(self)  # a local checkpoint directory, or a hub name with download=true
        require(self.embed_dim >= 1 and self.num_filters >= 1, "model.embed_dim/num_filters", "integers >= 1",
                (self.embed_dim, self.num_filters))
        require(len(self.filter_widths) >= 1 and min(self.filter_widths) >= 1, "model.filter_widths",
                "a non-empty list of integers >= 1", list(self.filter_widths))
        require(self.max_vocab is None or self.max_vocab >= 1, "model.max_vocab", "null or an integer >= 1",
                self.max_vocab)


class TextCNN(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 300, widths=(3, 4, 5),
                 num_filters: int = 100, dropout: float = 0.5, embeddings: Tensor | None = None):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        with torch.no_grad():  # Kim's random word vectors: U[-0.25, 0.25] (torch's default is N(0, 1)); <pad> 0
            self.embed.weight.copy_(embeddings if embeddings is not None else
                                    torch.empty(vocab_size, embed_dim).uniform_(-0.25, 0.25))
            self.embed.weight[0] = 0.0
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, num_filters, w) for w in widths)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_filters * len(widths), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        e = self.embed(x[:, 0]).transpose(1, 2)  # B x E x L
        pooled = [torch.relu(conv(e)).amax(dim=2) for conv in self.convs]  # max over time
        return self.fc(self.dropout(torch.cat(pooled, dim=1)))


def read_embeddings(path: str, vocab: list[str], dim: int) -> Tensor:
    """Rows of ``vocab`` from a word2vec/GloVe text file (UTF-8, ``word v1 ... v_dim`` per line; a word2vec
    header line ``count dim`` is skipped); missing words ~ U[-0.25, 0.25] (Kim 2014), ``<pad>`` zero. A file
    without vectors, a line that is not UTF-8 or holds another number of values, and a non-numeric or
    non-finite value of a vocabulary word are one-line ConfigErrors naming the file and the line."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"model.embeddings={path!r} is invalid: allowed null or an existing word-vector text "
                          f"file (word2vec or GloVe text format)")
    out = torch.empty(len(vocab), dim).uniform_(-0.25, 0.25)
    out[0] = 0.0
    ids, found, rows = {w: i for i, w in enumerate(vocab)}, 0, 0
    with open(file, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"model.embeddings: {file}:{number}"
            try:
                parts = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip().split(" ")
            except UnicodeDecodeError as e:
                raise ConfigError(f"{where} is not UTF-8 text (the byte 0x{raw[e.start]:02x} at column "
                                  f"{e.start + 1})") from None
            if parts == [""] or (number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts)):
                continue  # a blank line, or word2vec's header: count and dimension
            if len(parts) != dim + 1:
                raise ConfigError(f"{where} has {len(parts) - 1} values: allowed model.embed_dim={dim}")
            rows += 1
            if parts[0] in ids:
                values = []
                for v in parts[1:]:
                    try:
                        values.append(float(v))
                    except ValueError:
                        raise ConfigError(f"{where} has the value {v!r} for {parts[0]!r}: allowed numbers") from None
                vector = torch.tensor(values)
                if not torch.isfinite(vector).all():
                    raise ConfigError(f"{where} has a non-finite value for {parts[0]!r}: allowed finite numbers")
                out[ids[parts[0]]] = vector
                found += 1
    if not rows:
        raise ConfigError(f"model.embeddings: {file} holds no word vectors: allowed a word2vec or GloVe text file "
                          f"(a word and model.embed_dim={dim} numbers per line)")
    log.info(f"{found} of {len(vocab)} words found in {file}")
    return out


@register_model("textcnn", TextModelConfig)
def build_textcnn(cfg, num_classes: int, in_channels: int, vocab: list[str] | None = None) -> nn.Module:
    if vocab is None:
        raise ConfigError("model=textcnn is invalid for this dataset: allowed a text dataset (glue_*)")
    embeddings = read_embeddings(cfg.embeddings, vocab, cfg.embed_dim) if cfg.embeddings else None
    return TextCNN(len(vocab), num_classes, cfg.embed_dim, tuple(cfg.filter_widths), cfg.num_filters, cfg.dropout,
                   embeddings)


class HFClassifier(nn.Module):
    """A transformers sequence classifier fed with the ``3 x L`` token rows; returns its logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        # DistilBERT-like models have no segment embeddings and take no token_type_ids
        self.segments = getattr(net.config, "type_vocab_size", 0) > 0

    def forward(self, x: Tensor) -> Tensor:
        extra = {"token_type_ids": x[:, 1]} if self.segments else {}
        return self.net(input_ids=x[:, 0], attention_mask=x[:, 2], **extra).logits


@register_model("bert", TextModelConfig)
def build_bert(cfg, num_classes: int, in_channels: int, vocab: list[str] | None = None) -> nn.Module:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights were newly initialised": the classification head, expected
    try:
        net = AutoModelForSequenceClassification.from_pretrained(
            model_dir(cfg), num_labels=num_classes, local_files_only=not cfg.download)
    finally:
        hf_logging.set_verbosity(verbosity)
    return HFClassifier(net)
