"""BitFit: train only the biases of the Swin encoder's linear layers (and the head).

Every attention (qkv, proj) and MLP (linear1, linear2) bias of ``swinViT``: 9 d per block of width
d, 12,960 at F = 48, plus the head's 49 (relative-position tables excluded, as in the paper).
Zaken et al. 2022. Paper lr 1e-2. Notebook 04.
"""
from dataclasses import dataclass

from torch import nn

from fseft_lab.methods import freeze, register, swin_modules


@dataclass
class BitFitConfig:
    """No options: the selection is the method."""


@register("bitfit", BitFitConfig, lr=1e-2)
def apply(model, cfg: BitFitConfig):
    freeze(model)
    for _, linear in swin_modules(model, nn.Linear):
        if linear.bias is not None:
            linear.bias.requires_grad_(True)
    model.classifier.requires_grad_(True)
    return model
