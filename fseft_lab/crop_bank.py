"""The feature cache: support crops drawn once into a bank, and what the frozen part of the model
gives for each of them, computed once.

Whatever is frozen at the start of the network gives the same output for a crop at every step, so
:func:`fseft_lab.adapt.adapt` draws the crops once into a bank (``crop_bank`` per volume) and
computes that output once per crop:

* only the head trains (linear probe, black-box adapters): the whole trunk's features are
  cached, and a step costs only the adapter and head (notebooks 02 and 03);
* the Swin encoder is frozen but the decoder trains (the paper's novel-structure recipe,
  ``decoder="fine-tuned"`` or ``"new"`` with a head method): the encoder's hidden states are
  cached, and a step runs only the decoder and head, forward and backward (notebook 07).

``feature_cache=False`` with the same bank gives the same training, slower
(``tests/test_adapt.py``, ``benchmarks/feature_cache.py``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fseft_lab.data.transforms import training_crops
from fseft_lab.methods import DECODER_MODULES
from fseft_lab.progress import progress_bar

if TYPE_CHECKING:
    from fseft_lab.adapt import _Schedule


def frozen_trunk(model: nn.Module) -> bool:
    """True when nothing outside the head (``classifier``: head and black-box adapter) trains."""
    return not any(p.requires_grad for n, p in model.named_parameters() if not n.startswith("classifier."))


def only_head_trains(model: nn.Module) -> bool:
    """True when something trains and all of it is in the head: the trunk is a black box."""
    return frozen_trunk(model) and any(p.requires_grad for p in model.parameters())


def cache_level(model: nn.Module) -> str | None:
    """What a crop bank can hold for ``model``: ``"trunk"`` features when only the head trains,
    ``"encoder"`` hidden states when the Swin encoder is frozen but the decoder trains, else None."""
    if only_head_trains(model):
        return "trunk"
    encoder_trains = any(p.requires_grad for n, p in model.named_parameters() if n.startswith("swinViT."))
    if hasattr(model, "encode") and not encoder_trains and any(p.requires_grad for p in model.parameters()):
        return "encoder"
    return None


def draw_crops(case: dict, n: int, patch_size: int, pos_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random (1, P, P, P) crops of a case: images (n, 1, P, P, P) and labels (n, 1, P, P, P).

    Exactly ``round(n * pos_fraction)`` crops are centred on the task's structures and the rest
    anywhere (stratified, not drawn at random per crop): with few crops per step a step of only
    negative crops would otherwise be common, and its Dice loss is meaningless.
    """
    num_pos = round(n * pos_fraction)
    crops = []
    for count, pos in ((num_pos, 1.0), (n - num_pos, 0.0)):
        if count:
            cropper = training_crops(patch_size, count, pos=pos, neg=1.0 - pos)
            cropper.set_random_state(seed=seed + int(pos))
            crops += cropper({"image": case["image"], "label": case["label"]})
    return (torch.stack([torch.as_tensor(c["image"]) for c in crops]).float(),
            torch.stack([torch.as_tensor(c["label"]) for c in crops]))


def crop_banks(model: nn.Module, foundation: nn.Module, support: Sequence[dict], structures: tuple[str, ...],
               schedule: _Schedule, patch: int, bank_cache: dict | None, device: torch.device,
               progress: bool) -> list | None:
    """Each support volume's crop bank ``(inputs, labels)``, or None without banks (fresh crops every step).

    ``bank_size`` crops are drawn once per volume; with a feature cache their inputs are what the
    frozen part gives for them (once per crop, and a shared ``bank_cache`` also spares the next
    method), and the modules that train switch to channels-last layout."""
    cfg, level, bank_size = schedule.cfg, schedule.level, schedule.bank_size
    if not bank_size:
        return None
    banks = [draw_crops(case, bank_size, patch, cfg.pos_fraction, seed=_seed(cfg.seed, -1, v)) for v, case in enumerate(support)]
    if level is None:
        return [((images,), labels) for images, labels in banks]
    bank_cache = {} if bank_cache is None else bank_cache
    for v, (images, labels) in enumerate(progress_bar(banks, desc=f"caching {level} outputs", disable=not progress, leave=False)):
        key = (level, id(foundation), structures, support[v].get("case"), v, cfg.seed, bank_size, patch, cfg.pos_fraction)
        if key not in bank_cache:
            bank_cache[key] = frozen_outputs(model, level, images, schedule.crops, device)
        banks[v] = (bank_cache[key], labels)
    # the trained modules in channels-last layout: 3x faster 3x3x3 convolutions on CPU
    for name in ("classifier",) + (DECODER_MODULES if level == "encoder" else ()):
        getattr(model, name).to(memory_format=torch.channels_last_3d)
    return banks


@torch.no_grad()
def frozen_outputs(model: nn.Module, level: str, images: torch.Tensor, chunk: int,
                   device: torch.device) -> tuple[torch.Tensor, ...]:
    """What the frozen part of ``model`` gives for a crop bank: ``(features,)``, the trunk's
    (n, F, P, P, P) output (``level="trunk"``), or ``(images, *hidden)``, the crops and the Swin
    encoder's five hidden states (``level="encoder"``). Computed ``chunk`` crops at a time into
    preallocated tensors (no second copy for a concatenation). On CUDA they are kept in float16,
    as autocast computed them: half the memory for the same values, which is what lets the paper
    configuration's bank (48 crops of 48 x 96^3) fit a 16 GB GPU."""
    model.eval()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    bank = None
    for i in range(0, len(images), chunk):
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            outputs = [model.features(images[i:i + chunk].to(device))] if level == "trunk" else \
                model.encode(images[i:i + chunk].to(device))
        if bank is None:
            bank = [torch.empty((len(images), *o.shape[1:]), dtype=dtype, device=device) for o in outputs]
        for stored, o in zip(bank, outputs):
            stored[i:i + len(o)] = o
    return tuple(bank) if level == "trunk" else (images.to(device), *bank)


def pick_from_bank(bank: tuple[tuple[torch.Tensor, ...], torch.Tensor], rng: np.random.Generator, crops: int,
                   pos_fraction: float) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """``crops`` entries of a crop bank (inputs, labels), where inputs are one or more tensors
    per crop: one draw of indices for all, so each input keeps its own label."""
    inputs, labels = bank
    index = _pick(rng, len(labels), crops, pos_fraction)
    return tuple(t[index] for t in inputs), labels[index]


def _pick(rng: np.random.Generator, bank_size: int, crops: int, pos_fraction: float) -> torch.Tensor:
    """Indices of ``crops`` bank entries, ``round(crops * pos_fraction)`` of them positive."""
    bank_pos, n_pos = round(bank_size * pos_fraction), round(min(crops, bank_size) * pos_fraction)
    n_pos = min(n_pos, bank_pos)
    n_neg = min(min(crops, bank_size) - n_pos, bank_size - bank_pos)
    picked = np.concatenate([rng.choice(bank_pos, n_pos, replace=False),
                             bank_pos + rng.choice(bank_size - bank_pos, n_neg, replace=False)])
    return torch.as_tensor(np.sort(picked))


def _seed(*parts: int) -> int:
    """A seed in [0, 2^31) derived from several integers (the run's seed, a volume's index, ...)."""
    return int(np.random.default_rng([p % 2**32 for p in parts]).integers(2**31))
