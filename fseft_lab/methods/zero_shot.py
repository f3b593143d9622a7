"""Zero-shot: the foundation model as it is (paper: "generalization").

Nothing is trained. The task head's row for the target structure is the pre-trained head's row,
so the prediction is exactly the foundation model's sigmoid channel for that structure. It is the
baseline every adaptation must beat on a new domain. Notebook 02.
"""
from dataclasses import dataclass

from fseft_lab.methods import freeze, register


@dataclass
class ZeroShotConfig:
    """No options: nothing is trained."""


@register("zero_shot", ZeroShotConfig, lr=0.0)
def apply(model, cfg: ZeroShotConfig):
    return freeze(model)
