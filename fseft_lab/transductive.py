"""Constrained transductive inference (TI): the unlabelled query volume joins the adaptation.

With one labelled volume the adapter knows little about how big an organ is; the query volume
(the CT we want to segment) is there, unlabelled, at adaptation time. TI adds a term on the
query's prediction to the support loss, using only what the support set says about size:

    prior     S     = mean voxel count of the structure's largest component in the support masks
                      (with k >= 5, sizes outside median +- std are dropped first)
    predicted S_hat = sum of the query's probabilities (sigmoid, or the softmax channel)
    ratio     r     = S_hat / S,   the constraint:  1 - g <= r <= 1 + g   (g: the margin)

Three ways to use it (``TransductiveConfig.mode``):

- ``penalty`` (the paper): hinge(r) = max(0, (1 - g) - r) + max(0, r - (1 + g)), the L1 distance
  to the band in units of the prior; zero inside the band.
- ``barrier``: the log-barrier extension of the same two inequalities z <= 0 (Kervadec et al.
  2019): -log(-z) / t inside, continued linearly outside, so it is smooth and finite everywhere;
  t grows each epoch, which sharpens it towards the hard constraint.
- ``entropy``: no prior at all, the mean entropy of the query's probabilities (make the model
  confident on the query); the baseline the prior has to beat.

The term is weighted by lambda (``weight``, 0.1) and takes one optimiser step per epoch,
after the epoch's support steps and at the last one's learning rate, from ``start`` x epochs on (the paper: after half of
them). Only the adapter and head train, so the query's trunk features are computed once
(average-pooled x2, as the paper's code does) and every query step costs only the head.

Two protocols for several test volumes (``TransductiveConfig.protocol``, applied by
:func:`fseft_lab.experiments.run`): ``per_volume`` (the default, as the paper's reference code)
adapts once per query volume, on the support plus that one volume, and segments it with its own
model; ``pooled`` adapts one model while the test volumes take turns, one per epoch, so each
gets about 1 / (number of volumes) of the query steps. Taught in notebook 08.

>>> result = adapt(foundation, "spatial_adapter", support, query=query,            # doctest: +SKIP
...                transductive=TransductiveConfig("penalty"))
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms.utils import get_largest_connected_component_mask
from torch import nn

from fseft_lab.evaluate import trunk_features

MODES = ("penalty", "barrier", "entropy")
PROTOCOLS = ("per_volume", "pooled")


@dataclass
class TransductiveConfig:
    """How the query volume enters adaptation.

    Args:
        mode: ``penalty`` (the paper's hinge), ``barrier`` (log-barrier extension) or ``entropy``.
        margin: g, the half-width of the allowed size band relative to the prior (0.3).
        margins: per-structure margins overriding ``margin`` (the paper widens kidneys to 0.5).
        weight: lambda, the weight of the query term (0.1); 0: no query term, only TI's schedule.
        start: fraction of the epochs after which the query term switches on (0.5).
        pool: average pooling of the query's trunk features (2: 8x fewer voxels).
        t0, t_growth: the barrier's initial t and its growth factor per epoch.
        protocol: ``per_volume`` (one adaptation per query volume, the reference) or ``pooled``
            (one adaptation for all test volumes, taking turns).
        epochs: the adaptation's epochs, unless its :class:`~fseft_lab.adapt.AdaptConfig` sets
            them: the reference's 100 (the query term from epoch 50); None: the profile's.
    """

    mode: str = "penalty"
    margin: float = 0.3
    margins: dict = field(default_factory=lambda: {"kidney_left": 0.5, "kidney_right": 0.5})
    weight: float = 0.1
    start: float = 0.5
    pool: int = 2
    t0: float = 5.0
    t_growth: float = 1.05
    protocol: str = "per_volume"
    epochs: int | None = 100

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"transductive mode {self.mode!r}; choose one of {MODES}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"transductive protocol {self.protocol!r}; choose one of {PROTOCOLS}")
        for name, g in {"margin": self.margin, **{f"margins[{s!r}]": g for s, g in self.margins.items()}}.items():
            if not 0.0 < g < 1.0:
                raise ValueError(f"{name}={g}: a size margin must lie in (0, 1) (a fraction of the prior size)")
        if self.weight < 0:
            raise ValueError(f"weight (lambda)={self.weight} must be >= 0")
        if not 0.0 <= self.start <= 1.0:
            raise ValueError(f"start={self.start} must lie in [0, 1] (a fraction of the epochs)")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs={self.epochs} must be >= 1 (or None: the profile's)")
        if self.pool < 1 or self.t0 <= 0 or self.t_growth < 1:
            raise ValueError(f"pool={self.pool} must be >= 1, t0={self.t0} > 0 and t_growth={self.t_growth} >= 1")

    @property
    def label(self) -> str:
        """What a results table's ``transductive`` column says: the mode, or, with ``weight`` 0,
        ``none, TI schedule``: no query term, on transductive inference's schedule (every epoch, no
        early stop), the baseline that compares TI with none on equal schedules."""
        return self.mode if self.weight > 0 else "none, TI schedule"

    def margin_of(self, structure: str) -> float:
        return self.margins.get(structure, self.margin)


def support_sizes(support: Sequence[dict], structures: Sequence[str]) -> dict[str, list[int]]:
    """Voxel count of each structure's largest connected component in each support mask (0: absent)."""
    sizes: dict[str, list[int]] = {s: [] for s in structures}
    for case in support:
        label = torch.as_tensor(case["label"])[0]
        for i, s in enumerate(structures, start=1):
            mask = label == i
            sizes[s].append(int(get_largest_connected_component_mask(mask).sum()) if mask.any() else 0)
    return sizes


def size_prior(support: Sequence[dict], structures: Sequence[str]) -> dict[str, float]:
    """The prior size S per structure (voxels at the support's spacing).

    The mean over the support volumes that show the structure; with 5 or more of them, sizes
    outside median +- std are dropped first. Refuses a structure no support mask shows: there
    is then no prior to constrain the query with.
    """
    prior = {}
    for s, sizes in support_sizes(support, structures).items():
        shown = np.array([n for n in sizes if n > 0], dtype=float)
        if not len(shown):
            raise ValueError(f"no support mask shows {s!r} (cases {[c.get('case') for c in support]}): "
                             "there is no size prior, so transductive inference cannot be used for it")
        if len(shown) >= 5:
            median, std = np.median(shown), shown.std()
            shown = shown[np.abs(shown - median) <= std] if std > 0 else shown
        prior[s] = float(shown.mean())
    return prior


def hinge(ratio: torch.Tensor, margin: float) -> torch.Tensor:
    """The paper's penalty: distance of r = S_hat / S to the band [1 - g, 1 + g] (0 inside)."""
    return F.relu((1 - margin) - ratio) + F.relu(ratio - (1 + margin))


def log_barrier(z: torch.Tensor, t: float) -> torch.Tensor:
    """Log-barrier extension for a constraint z <= 0 (Kervadec et al. 2019): -log(-z) / t while
    z <= -1/t^2, then its tangent line, so it is defined (and convex) for every z."""
    inside = z <= -1 / t**2
    log_part = -torch.log(-torch.where(inside, z, torch.full_like(z, -1.0))) / t
    linear = t * z - math.log(1 / t**2) / t + 1 / t
    return torch.where(inside, log_part, linear)


def barrier(ratio: torch.Tensor, margin: float, t: float) -> torch.Tensor:
    """Both sides of the band through the log-barrier extension."""
    return log_barrier((1 - margin) - ratio, t) + log_barrier(ratio - (1 + margin), t)


def probabilities(logits: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """(B, C, ...) logits -> the structures' probabilities (the background channel dropped)."""
    return logits.softmax(1)[:, 1:] if multiclass else logits.sigmoid()


def entropy(logits: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """Mean per-voxel entropy (nats) of the prediction: softmax over classes, or each sigmoid."""
    if multiclass:
        return -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()
    p = logits.sigmoid()
    return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)).mean()


class QueryTerm:
    """The query side of TI for one adaptation: the query's pooled trunk features, the prior,
    and the loss added at each epoch from ``start`` on."""

    def __init__(self, model: nn.Module, support: Sequence[dict], query: Sequence[dict], structures: Sequence[str],
                 multiclass: bool, config: TransductiveConfig, patch_size: int, epochs: int, device: torch.device):
        if not query:
            raise ValueError("transductive inference needs at least one unlabelled query volume")
        self.structures, self.multiclass, self.config = tuple(structures), multiclass, config
        try:  # entropy needs no prior; it is still computed there, when it exists, to plot sizes against
            self.prior = size_prior(support, structures)
        except ValueError:
            if config.mode != "entropy":
                raise
            self.prior = {}
        self.start_epoch = math.floor(config.start * epochs)
        self.voxel_weight = config.pool ** 3  # a pooled voxel stands for pool^3 voxels
        self.features = []
        for case in query:
            f = case["features"] if "features" in case else trunk_features(model, case["image"], patch_size)
            f = F.avg_pool3d(f[None].float(), config.pool, ceil_mode=True) if config.pool > 1 else f[None].float()
            self.features.append(f.to(device).contiguous(memory_format=torch.channels_last_3d))

    def sizes(self, head: nn.Module, features: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(queries, structures) predicted sizes S_hat in voxels (of every query volume by default)."""
        return torch.stack([probabilities(head(f), self.multiclass).sum((0, 2, 3, 4)) * self.voxel_weight
                            for f in (self.features if features is None else features)])

    def loss(self, head: nn.Module, epoch: int) -> torch.Tensor:
        """lambda x the query term of this epoch's query volume (they take turns), averaged over structures."""
        cfg = self.config
        features = [self.features[epoch % len(self.features)]]
        if cfg.mode == "entropy":
            return cfg.weight * entropy(head(features[0]), self.multiclass)
        ratio = self.sizes(head, features) / torch.tensor([self.prior[s] for s in self.structures],
                                                          device=features[0].device)
        margins = [cfg.margin_of(s) for s in self.structures]
        t = cfg.t0 * cfg.t_growth ** max(0, epoch - self.start_epoch)
        terms = [hinge(ratio[:, j], g) if cfg.mode == "penalty" else barrier(ratio[:, j], g, t)
                 for j, g in enumerate(margins)]
        return cfg.weight * torch.stack(terms, 1).mean()

    @torch.no_grad()
    def logged_sizes(self, head: nn.Module) -> dict[str, float]:
        """The learning curve's columns: mean predicted size over the queries, in voxels."""
        sizes = self.sizes(head).mean(0)
        return {f"query_size/{s}": float(sizes[j]) for j, s in enumerate(self.structures)}
