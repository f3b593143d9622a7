"""Compacter: parameterised-hypercomplex (PHM) layers after each Swin block's attention and MLP.

A PHM layer is a d x d linear map built as a sum of n Kronecker products,

    W = sum_i  A_i (x) B_i,    A_i: (n, n) "rule",  B_i: (d/n, d/n),   n = 4

so it costs d^2 / n + n^3 weights instead of d^2. As in the paper's reference code, one PHM layer
follows the attention and one the MLP of every block (d^2 / 2 + 2 d + 2 n^3 per block), and the
encoder's LayerNorms train too: 199,744 + 17,280 LayerNorm parameters at F = 48, 217,073 with
the head (the paper's "~217,000"), in both versions below.

``init="reference"`` (the default, the reference code): the PHM layer *replaces* the branch's
output y by W y + b, with B_i Glorot-uniform (gain sqrt 2), A_i ~ N(0, 0.01^2) and b = 0, so
the adapted model does not start as the foundation model (W is small: the blocks start close to
skipping their attention and MLP). ``init="zero"`` (the course's version before): y + W y + b
with B_i = 0, which starts exactly as the foundation model like the other additive methods.
Karimi Mahabadi et al. 2021. Paper lr 1e-2. Notebook 06.
"""
import math
from dataclasses import dataclass

import torch
from torch import nn

from fseft_lab.methods import freeze, register, swin_modules

INITS = ("reference", "zero")


@dataclass
class CompacterConfig:
    n: int = 4                 # number of Kronecker terms; d must be divisible by n
    init: str = "reference"    # "reference": y -> W y + b, random W; "zero": y -> y + W y + b, W = 0 at the start


class PHMLinear(nn.Module):
    """y = x W + b with W = sum_i kron(rule[i], weight[i]): (d, d) from n^3 + d^2 / n numbers."""

    def __init__(self, dim: int, n: int, zero: bool = False):
        super().__init__()
        if n < 1 or dim % n:
            raise ValueError(f"Compacter n={n} must divide the block width d={dim}")
        self.rule = nn.Parameter(torch.randn(n, n, n) * 0.01)           # A_i, (n, n, n)
        self.weight = nn.Parameter(torch.zeros(n, dim // n, dim // n))  # B_i, (n, d/n, d/n)
        self.bias = nn.Parameter(torch.zeros(dim))
        if not zero:
            for b in self.weight.data:
                nn.init.xavier_uniform_(b, gain=math.sqrt(2))

    def forward(self, x):                                          # x: (..., d)
        w = sum(torch.kron(a, b) for a, b in zip(self.rule, self.weight))   # (d, d)
        return x @ w + self.bias                                   # (..., d)


class WithPHM(nn.Module):
    """Wraps a frozen branch (``base_layer``: attention or MLP): PHM(y), or y + PHM(y) (``residual``)."""

    def __init__(self, base_layer: nn.Module, dim: int, n: int, residual: bool):
        super().__init__()
        self.base_layer, self.residual, self.phm = base_layer, residual, PHMLinear(dim, n, zero=residual)

    def forward(self, *args, **kwargs):
        y = self.base_layer(*args, **kwargs)                       # (..., d) tokens
        return y + self.phm(y) if self.residual else self.phm(y)   # (..., d)


@register("compacter", CompacterConfig, lr=1e-2,
          variants={"y + W y with W = 0: starts as the foundation model (the course before)": {"init": "zero"}})
def apply(model, cfg: CompacterConfig):
    if cfg.init not in INITS:
        raise ValueError(f"Compacter init={cfg.init!r}; choose one of {INITS}")
    freeze(model)
    for _, block in [(n, m) for n, m in swin_modules(model, nn.Module) if hasattr(m, "attn") and hasattr(m, "mlp")]:
        dim = block.norm1.normalized_shape[0]
        block.attn = WithPHM(block.attn, dim, cfg.n, residual=cfg.init == "zero")
        block.mlp = WithPHM(block.mlp, dim, cfg.n, residual=cfg.init == "zero")
        block.attn.phm.requires_grad_(True)
        block.mlp.phm.requires_grad_(True)
    for _, norm in swin_modules(model, nn.LayerNorm):
        norm.requires_grad_(True)
    model.classifier.requires_grad_(True)
    return model
