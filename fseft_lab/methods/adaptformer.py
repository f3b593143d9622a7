"""AdaptFormer: a small bottleneck MLP in parallel with each Swin block's MLP.

    x <- x + attention(norm1(x))                                   (the block's first half, frozen)
    x <- x + mlp(norm2(x)) + s * up(ReLU(down(x))),   down: d -> 16, up: 16 -> d (zero-init), s = 0.1

``x`` is the block's tokens (B, X, Y, Z, d). As in the paper's reference code, the branch reads
them *before* the second LayerNorm (the course first read the normalised ``norm2(x)``:
``branch_input="normalised"`` keeps that variant, same count). 33 d + 16 parameters per block:
47,648 at F = 48, 47,697 with the head, either way. Chen et al. 2022. Paper lr 1e-2. Notebook 06.
"""
from dataclasses import dataclass

from torch import nn
from torch.utils import checkpoint

from fseft_lab.methods import freeze, register, swin_modules

BRANCH_INPUTS = ("block", "normalised")


@dataclass
class AdaptFormerConfig:
    width: int = 16               # bottleneck width
    scale: float = 0.1            # s, the weight of the parallel branch
    branch_input: str = "block"   # "block": x before norm2 (the reference); "normalised": norm2(x) (the course before)


class AdaptFormerBlock(nn.Module):
    """Wraps a frozen Swin block (``base_layer``) and adds a zero-initialised bottleneck beside its MLP."""

    def __init__(self, base_layer: nn.Module, width: int, scale: float, branch_input: str = "block"):
        super().__init__()
        if branch_input not in BRANCH_INPUTS:
            raise ValueError(f"AdaptFormer branch_input={branch_input!r}; choose one of {BRANCH_INPUTS}")
        dim = base_layer.norm2.normalized_shape[0]
        self.base_layer, self.scale, self.branch_input = base_layer, scale, branch_input
        self.down = nn.Linear(dim, width)
        self.up = nn.Linear(width, dim)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x, mask_matrix):                                        # x: (B, X, Y, Z, d)
        block = self.base_layer
        x = x + block.drop_path(self._run(block.forward_part1, x, mask_matrix))  # (B, X, Y, Z, d) attention half
        branch = x if self.branch_input == "block" else block.norm2(x)        # (B, X, Y, Z, d)
        adapter = self.scale * self.up(nn.functional.relu(self.down(branch)))  # (B, X, Y, Z, d)
        return x + self._run(block.forward_part2, x) + adapter                # (B, X, Y, Z, d)

    def _run(self, part, *args):
        """One half of the wrapped block, under activation checkpointing when the block has it on,
        as MONAI's ``SwinTransformerBlock.forward`` runs it (recomputed in backward, not stored)."""
        if self.base_layer.use_checkpoint:
            return checkpoint.checkpoint(part, *args, use_reentrant=False)
        return part(*args)


@register("adaptformer", AdaptFormerConfig, lr=1e-2,
          variants={"branch reads norm2(x) (the course before)": {"branch_input": "normalised"}})
def apply(model, cfg: AdaptFormerConfig):
    freeze(model)
    for _, layer in swin_modules(model, nn.Module):
        if hasattr(layer, "blocks"):                                  # a Swin stage: its blocks, in order
            for i, block in enumerate(layer.blocks):
                layer.blocks[i] = AdaptFormerBlock(block, cfg.width, cfg.scale, cfg.branch_input)
                layer.blocks[i].down.requires_grad_(True)
                layer.blocks[i].up.requires_grad_(True)
    model.classifier.requires_grad_(True)
    return model
