"""Affine-LN: train only the LayerNorm scales and shifts of the Swin encoder (and the head).

LayerNorm computes gamma * (x - mean) / std + beta; re-learning gamma and beta (2 d per norm:
norm1, norm2 of each block and the patch-merging norms) re-targets the frozen encoder's feature
statistics to a new domain: 17,280 parameters at F = 48, 17,329 with the head. Paper lr 1e-2.
Notebook 04.
"""
from dataclasses import dataclass

from torch import nn

from fseft_lab.methods import freeze, register, swin_modules


@dataclass
class AffineLNConfig:
    """No options: the selection is the method."""


@register("affine_ln", AffineLNConfig, lr=1e-2)
def apply(model, cfg: AffineLNConfig):
    freeze(model)
    for _, norm in swin_modules(model, nn.LayerNorm):
        norm.requires_grad_(True)
    model.classifier.requires_grad_(True)
    return model
