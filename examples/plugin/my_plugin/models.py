"""``model=mlp``: a model of one's own (its YAML: ``conf/model/mlp.yaml``)."""
from __future__ import annotations

from torch import nn

from lstsd.config import ModelConfig
from lstsd.registry import register_model


@register_model("mlp", ModelConfig)  # the base schema: model.dropout is its only knob besides its name
def build_mlp(cfg: ModelConfig, num_classes: int, in_channels: int, input_shape: tuple) -> nn.Module:
    """A builder gets the model's config, the number of classes and the input channels (and, when it names them,
    one sample's ``input_shape`` and a text dataset's ``vocab``)."""
    width = 1
    for size in input_shape:
        width *= size
    return nn.Sequential(nn.Flatten(), nn.Linear(width, 64), nn.ReLU(), nn.Dropout(cfg.dropout),
                         nn.Linear(64, num_classes))
