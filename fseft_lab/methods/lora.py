"""LoRA: a trainable low-rank update beside every attention qkv projection of the Swin encoder.

    qkv(x) = W x + (alpha / r) * B A x,   W: (3d, d) frozen,  A: (3r, d),  B: (3d, 3r) zero-init

as in the paper's code (rank r per query, key and value: A maps d -> 3r). B = 0 makes the adapted
model equal to the foundation model at step 0. With r = 4: 48 d per block, 69,120 at F = 48,
69,169 with the head. Hu et al. 2022. Paper lr 1e-3. Notebook 05.
"""
from dataclasses import dataclass

from torch import nn

from fseft_lab.methods import freeze, register, swin_modules


@dataclass
class LoRAConfig:
    rank: int = 4        # r: rank per query / key / value
    alpha: float = 4.0   # scaling numerator: the update is multiplied by alpha / r


class LoRALinear(nn.Module):
    """Wraps a frozen ``nn.Linear`` (``base_layer``) and adds ``(alpha / r) B A x``."""

    def __init__(self, base_layer: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base_layer = base_layer
        self.lora_A = nn.Linear(base_layer.in_features, 3 * rank, bias=False)    # (3r, d)
        self.lora_B = nn.Linear(3 * rank, base_layer.out_features, bias=False)   # (3d, 3r)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=5 ** 0.5)
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / rank

    def forward(self, x):                                         # x: (..., d) window tokens
        return self.base_layer(x) + self.scaling * self.lora_B(self.lora_A(x))  # (..., 3d)


@register("lora", LoRAConfig, lr=1e-3)
def apply(model, cfg: LoRAConfig):
    freeze(model)
    for _, attention in [(n, m) for n, m in swin_modules(model, nn.Module) if hasattr(m, "qkv")]:
        attention.qkv = LoRALinear(attention.qkv, cfg.rank, cfg.alpha)
    for module in model.modules():
        if isinstance(module, LoRALinear):
            module.lora_A.requires_grad_(True)
            module.lora_B.requires_grad_(True)
    model.classifier.requires_grad_(True)
    return model
