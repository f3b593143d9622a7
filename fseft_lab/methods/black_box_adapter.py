"""Black-box adapters: a residual conv-ReLU-conv on the frozen trunk's features, before the head.

    z = x + W_up * ReLU(W_down * x),   x, z: (B, F, X, Y, Z),   logits = head(z)

``W_down`` and ``W_up`` are F -> F convolutions without bias, 1x1x1 (``adapter_1x1``: 2 F^2
weights, 4,657 with the head at F = 48) or 3x3x3 (``spatial_adapter``: 2 * 27 F^2, 124,465),
the spatial one seeing a voxel's neighbourhood. ``W_up`` starts at zero, so the adapted model
equals the foundation model at step 0. Only the trunk's output is needed: the model is a black
box, and its features can be computed once and cached (notebook 03). Paper lr 1e-4.
"""
from dataclasses import dataclass

from torch import nn

from fseft_lab.methods import freeze, register


@dataclass
class AdapterConfig:
    kernel_size: int = 1   # 1: per-voxel adapter; 3: spatial adapter


@dataclass
class SpatialAdapterConfig(AdapterConfig):
    kernel_size: int = 3


class ResidualAdapter(nn.Module):
    """Wraps the (frozen) head: ``base_layer(x + up(relu(down(x))))``."""

    def __init__(self, base_layer: nn.Conv3d, kernel_size: int):
        super().__init__()
        f = base_layer.in_channels
        self.base_layer = base_layer
        self.down = nn.Conv3d(f, f, kernel_size, padding=kernel_size // 2, bias=False)
        self.up = nn.Conv3d(f, f, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.zeros_(self.up.weight)  # identity at step 0

    def forward(self, x):                                   # x: (B, F, X, Y, Z) trunk features
        z = x + self.up(nn.functional.relu(self.down(x)))    # (B, F, X, Y, Z)
        return self.base_layer(z)                            # (B, C, X, Y, Z)


def apply(model, cfg: AdapterConfig):
    freeze(model)
    model.classifier = ResidualAdapter(model.classifier, cfg.kernel_size)
    model.classifier.requires_grad_(True)                    # adapter and head are trained
    return model


register("adapter_1x1", AdapterConfig, lr=1e-4)(apply)
register("spatial_adapter", SpatialAdapterConfig, lr=1e-4)(apply)
