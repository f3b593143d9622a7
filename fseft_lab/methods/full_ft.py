"""Full fine-tuning (FT): every weight of the foundation model is trained.

The reference point of the paper: strongest with many labelled volumes, prone to over-fitting
(and memory-hungry) with one or five. About 62 M parameters at F = 48. Paper lr 1e-4. Notebook 07.
"""
from dataclasses import dataclass

from fseft_lab.methods import register


@dataclass
class FullFTConfig:
    """No options: everything is trained."""


@register("full_ft", FullFTConfig, lr=1e-4)
def apply(model, cfg: FullFTConfig):
    model.requires_grad_(True)
    return model
