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
from pathlib import Path

import torch
from torch import Tensor, nn

from lstsd.models import register_model

log = logging.getLogger(__name__)


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
    """Rows of ``vocab`` from a word2vec/GloVe text file (``word v1 ... v_dim`` per line; a word2vec header line
    is skipped); missing words ~ U[-0.25, 0.25] (Kim 2014), ``<pad>`` zero."""
    from lstsd.config import ConfigError

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"model.embeddings={path!r} is invalid: allowed null or an existing word-vector text "
                          f"file (word2vec or GloVe text format)")
    out = torch.empty(len(vocab), dim).uniform_(-0.25, 0.25)
    out[0] = 0.0
    ids, found = {w: i for i, w in enumerate(vocab)}, 0
    with open(file, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            parts = line.rstrip().split(" ")
            if number == 1 and len(parts) == 2:  # word2vec header: count and dimension
                continue
            if parts[0] in ids:
                if len(parts) != dim + 1:
                    raise ConfigError(f"model.embeddings: {file}:{number} has {len(parts) - 1} values: allowed "
                                      f"model.embed_dim={dim}")
                out[ids[parts[0]]] = torch.tensor([float(v) for v in parts[1:]])
                found += 1
    log.info(f"{found} of {len(vocab)} words found in {file}")
    return out


@register_model("textcnn")
def build_textcnn(cfg, num_classes: int, in_channels: int, vocab: list[str] | None = None) -> nn.Module:
    from lstsd.config import ConfigError

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


@register_model("bert")
def build_bert(cfg, num_classes: int, in_channels: int, vocab: list[str] | None = None) -> nn.Module:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from lstsd.data.text import model_dir

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights were newly initialised": the classification head, expected
    try:
        net = AutoModelForSequenceClassification.from_pretrained(
            model_dir(cfg), num_labels=num_classes, local_files_only=not cfg.download)
    finally:
        hf_logging.set_verbosity(verbosity)
    return HFClassifier(net)
