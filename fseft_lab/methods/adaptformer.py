"""AdaptFormer: a small bottleneck MLP in parallel with each Swin block's MLP.

    mlp'(x) = mlp(x) + s * up(ReLU(down(x))),   down: d -> 16, up: 16 -> d (zero-init), s = 0.1

``x`` is the block's normalised tokens (B, N, d). 33 d + 16 parameters per block: 47,648 at
F = 48, 47,697 with the head. Chen et al. 2022. Paper lr 1e-2. Notebook 06.
"""
from dataclasses import dataclass

from torch import nn

from fseft_lab.methods import freeze, register, swin_modules


@dataclass
class AdaptFormerConfig:
    width: int = 16      # bottleneck width
    scale: float = 0.1   # s, the weight of the parallel branch


class ParallelAdapter(nn.Module):
    """Wraps a frozen MLP block (``base_layer``) with a zero-initialised parallel bottleneck."""

    def __init__(self, base_layer: nn.Module, dim: int, width: int, scale: float):
        super().__init__()
        self.base_layer, self.scale = base_layer, scale
        self.down = nn.Linear(dim, width)
        self.up = nn.Linear(width, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x):                                                     # x: (B, ..., d)
        return self.base_layer(x) + self.scale * self.up(nn.functional.relu(self.down(x)))  # (B, ..., d)


@register("adaptformer", AdaptFormerConfig, lr=1e-2)
def apply(model, cfg: AdaptFormerConfig):
    freeze(model)
    for _, block in [(n, m) for n, m in swin_modules(model, nn.Module) if hasattr(m, "mlp") and hasattr(m, "norm2")]:
        block.mlp = ParallelAdapter(block.mlp, block.norm2.normalized_shape[0], cfg.width, cfg.scale)
        block.mlp.down.requires_grad_(True)
        block.mlp.up.requires_grad_(True)
    model.classifier.requires_grad_(True)
    return model
