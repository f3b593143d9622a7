"""Adaptive-rank LoRA (after ARENA): LoRA written as P diag(s) Q, with a sparse s.

    qkv(x) = W x + (alpha / r) * P diag(s) Q x,   Q: (3r, d),  s: (3r,),  P: (3d, 3r)

Each of the 3r components is a rank-one update s_i p_i q_i^T. An L1 penalty lambda |s|_1 is
handled by its proximal operator after every optimiser step (soft-thresholding):

    s <- sign(s) * max(|s| - lr * lambda, 0)

so a component whose gradient does not keep pushing it one way is set to exactly zero, and
each layer keeps the rank its task needs: r is a maximum, not a guess that has to be right.
``s`` starts at zero (the adapted model equals the foundation model at step 0) while P and Q
start random, so s receives gradient at once. :func:`learned_ranks` reports the ranks.
Beyond the paper (its follow-up, ARENA). Paper lr for LoRA, 1e-3. Notebook 05.
"""
from dataclasses import dataclass

import torch
from torch import nn

from fseft_lab.methods import freeze, register, swin_modules


@dataclass
class AdaptiveLoRAConfig:
    rank: int = 8          # r: the maximum rank per query / key / value (3r components in all)
    alpha: float = 8.0     # the update is multiplied by alpha / r
    l1: float = 0.5        # lambda: threshold lr * lambda per step; 0 keeps every component


class AdaptiveLoRALinear(nn.Module):
    """Wraps a frozen ``nn.Linear`` (``base_layer``) and adds ``(alpha / r) P diag(s) Q x``."""

    def __init__(self, base_layer: nn.Linear, rank: int, alpha: float, l1: float):
        super().__init__()
        if rank < 1 or l1 < 0:
            raise ValueError(f"adaptive LoRA needs rank >= 1 and l1 >= 0, got rank={rank}, l1={l1}")
        self.base_layer = base_layer
        self.lora_Q = nn.Linear(base_layer.in_features, 3 * rank, bias=False)   # (3r, d)
        self.lora_s = nn.Parameter(torch.zeros(3 * rank))                       # (3r,)
        self.lora_P = nn.Linear(3 * rank, base_layer.out_features, bias=False)  # (3d, 3r)
        nn.init.kaiming_uniform_(self.lora_Q.weight, a=5 ** 0.5)
        nn.init.kaiming_uniform_(self.lora_P.weight, a=5 ** 0.5)
        self.scaling, self.l1 = alpha / rank, l1

    def forward(self, x):                                                      # x: (..., d)
        return self.base_layer(x) + self.scaling * self.lora_P(self.lora_s * self.lora_Q(x))  # (..., 3d)

    @torch.no_grad()
    def proximal(self, lr: float) -> None:
        """Soft-threshold s: the proximal step of lr * l1 * |s|_1."""
        s = self.lora_s
        s.copy_(s.sign() * (s.abs() - lr * self.l1).clamp_min(0))

    def rank(self) -> int:
        return int((self.lora_s != 0).sum())


def learned_ranks(model: nn.Module) -> dict[str, int]:
    """Non-zero components of s per adapted layer (name of the attention block -> rank)."""
    return {name.removesuffix(".qkv"): m.rank() for name, m in model.named_modules()
            if isinstance(m, AdaptiveLoRALinear)}


@register("adaptive_lora", AdaptiveLoRAConfig, lr=1e-3)
def apply(model, cfg: AdaptiveLoRAConfig):
    freeze(model)
    for _, attention in [(n, m) for n, m in swin_modules(model, nn.Module) if hasattr(m, "qkv")]:
        attention.qkv = AdaptiveLoRALinear(attention.qkv, cfg.rank, cfg.alpha, cfg.l1)
    for module in model.modules():
        if isinstance(module, AdaptiveLoRALinear):
            for p in (module.lora_Q.weight, module.lora_s, module.lora_P.weight):
                p.requires_grad_(True)
    model.classifier.requires_grad_(True)
    return model
