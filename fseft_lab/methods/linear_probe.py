"""Linear probe (LP): train only the 1x1x1 head on the frozen foundation model's features.

The head maps the trunk's (B, F, X, Y, Z) features to (B, C, X, Y, Z) logits with F*C + C
parameters (49 for F = 48 and one structure). For base organs it starts from the pre-trained row,
so step 0 is the zero-shot model. With the trunk frozen its features can be cached (notebook 03).
Paper lr 1e-2. Notebook 02.
"""
from dataclasses import dataclass

from fseft_lab.methods import freeze, register


@dataclass
class LinearProbeConfig:
    """No options: the head is the whole method."""


@register("linear_probe", LinearProbeConfig, lr=1e-2)
def apply(model, cfg: LinearProbeConfig):
    freeze(model).classifier.requires_grad_(True)
    return model
