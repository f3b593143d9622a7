"""BitFit: train only the biases of the Swin encoder's attention and MLP (and the head).

Every attention (qkv, proj) and MLP (linear1, linear2) bias of ``swinViT`` (9 d per block of
width d) and, as the paper's reference code selects them (every ``swinViT`` parameter named
``bias`` under ``attn`` or ``mlp``), each attention's relative-position bias table (13^3 x heads
per block): 210,739 trainable parameters at F = 48 with the head's 49. Without the tables
(``relative_position_tables=False``, the course's count before, and the paper table's
"~13,000"): 12,960 biases, 13,009 with the head. Zaken et al. 2022. Paper lr 1e-2. Notebook 04.
"""
from dataclasses import dataclass

from torch import nn

from fseft_lab.methods import freeze, register, swin_modules


@dataclass
class BitFitConfig:
    relative_position_tables: bool = True   # also train each attention's relative-position bias table (the reference)


@register("bitfit", BitFitConfig, lr=1e-2,
          variants={"without relative-position tables (the course before)": {"relative_position_tables": False}})
def apply(model, cfg: BitFitConfig):
    freeze(model)
    for _, linear in swin_modules(model, nn.Linear):
        if linear.bias is not None:
            linear.bias.requires_grad_(True)
    if cfg.relative_position_tables:
        for _, attention in swin_modules(model, nn.Module):
            if hasattr(attention, "relative_position_bias_table"):
                attention.relative_position_bias_table.requires_grad_(True)
    model.classifier.requires_grad_(True)
    return model
