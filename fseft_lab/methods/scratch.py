"""Scratch: the same network trained from a fresh initialisation, without the foundation model.

Every weight is re-initialised (the paper starts the encoder from self-supervised weights, which
``zoo.load_checkpoint(model, path, 'tang2022_ssl')`` can load first on real data) and trained; the
head is new. It measures what pre-training is worth. Paper lr 1e-4. Notebook 07.
"""
from dataclasses import dataclass

import torch
from torch import nn

from fseft_lab.methods import register


@dataclass
class ScratchConfig:
    seed: int = 0   # initialisation seed


@register("scratch", ScratchConfig, lr=1e-4)
def apply(model, cfg: ScratchConfig):
    torch.manual_seed(cfg.seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for name, p in model.named_parameters():  # Swin attention has no reset_parameters of its own
        if name.endswith("relative_position_bias_table"):
            nn.init.trunc_normal_(p, std=0.02)
    model.requires_grad_(True)
    return model
