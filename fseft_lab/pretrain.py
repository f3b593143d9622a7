"""Partial-label pre-training of the foundation model (paper, section "Foundation model").

Each source dataset labels only some structures of the universal template. A sample ``n`` of a
dataset contributes a per-class sigmoid Dice loss (smooth 1) plus binary cross-entropy, each
multiplied by the **annotation mask** ``w[n, c]`` (1 if the dataset labels class ``c``) and
normalised by ``sum_c w[n, c]``: classes a dataset does not label contribute nothing, neither as
organ nor as background. Sources are sampled uniformly (balanced), crops are positive:negative
4:1 (``negatives=0.2``) with positives spread evenly over the labelled structures present (or, with
``balance="structures"``, a labelled structure is drawn first, uniformly, then a case showing it,
so that an organ few sources label, like the spleen, gets as many positive crops as the liver), an intensity shift of up
to 0.1 on 20 % of crops (the paper's rot90 is left out: it swaps left and right organs), AdamW with
linear warm-up then cosine decay, mixed precision on CUDA. Taught in notebook 01.

Runs on one process or many: ``torchrun --nproc_per_node N -m fseft_lab.cli pretrain ...``
starts DistributedDataParallel (NCCL on GPUs, gloo on CPUs); every rank draws its own crops.
Every ``checkpoint_every`` steps the full state is saved atomically; ``resume=True`` continues
from it and gives the same weights as an uninterrupted run, because the crops of step ``s`` are
drawn from a generator seeded by ``(seed, s, rank)``, not from a stream that depends on the past.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.transforms import RandCropByLabelClassesd

from fseft_lab.data import augment
from fseft_lab.data.augment import CONTRAST_SHIFT, PHASE_STRENGTH, SPATIAL_MARGIN, de_enhance
from fseft_lab.data.layouts import export_phantom, open_dataset
from fseft_lab.data.transforms import UniversalTargetd, preprocess
from fseft_lab.models.foundation import FoundationModel, resolve_geometry
from fseft_lab.models.zoo import GEOMETRY_KEY, geometry_state, read_state_dict
from fseft_lab.outputs import atomic_write
from fseft_lab.profiles import Geometry, get_profile
from fseft_lab.progress import progress_bar

#: Phantom source datasets: domain -> label template of the real dataset it imitates.
SOURCES: dict[str, str] = {"btcv_like": "btcv", "lits_like": "lits", "kits_like": "kits",
                           "amos_like": "amos", "ctorg_like": "ctorg"}


@dataclass
class PretrainConfig:
    """Pre-training settings (defaults: the cpu profile's shipped run).

    Args:
        out: run folder: ``checkpoint.pt`` (resumable state), ``model.pt`` (weights), ``log.csv``.
        profile: sizes (spacing, patch, feature size); see :mod:`fseft_lab.profiles`.
        steps: optimiser steps (default: the profile's ``pretrain_steps``).
        crops_per_step: random crops per step and process (the batch).
        lr: peak learning rate after warm-up.
        warmup_steps: linear warm-up steps, then cosine decay to zero.
        weight_decay: AdamW weight decay (1e-5 in the paper).
        bce_weight: weight of the masked cross-entropy added to the masked Dice loss.
        cases_per_source: phantom volumes per source dataset (default: the profile's).
        data_dir: where phantom sources are exported (reused when already there).
        sources: source folders; default: phantom sources exported into ``data_dir``.
        seed: seeds the model initialisation and every crop.
        checkpoint_every: save the resumable state every this many steps.
        resume: continue from ``out/checkpoint.pt``.
        init: optional weights file to start from (e.g. a shorter run's ``model.pt``).
        balance: ``sources`` (the paper: datasets sampled uniformly) or ``structures`` (each
            labelled structure equally often as the centre of positive crops).
        contrast_aug: probability that a crop's labelled structures get one intensity shift each,
            as if scanned in another contrast phase (see :func:`draw_batch`; 0: the paper's recipe).
        phase_aug: probability that a whole crop's enhanced tissue, labelled or not, is pulled
            toward plain CT's values (see :func:`de_enhance`; 0: the paper's recipe).
        negatives: probability that a crop is centred on an unlabelled voxel, anywhere in the
            scan (0.2: the paper's 4:1); the others centre on labelled structures. Roughly
            nnU-Net's recipe at 0.67: it forces foreground into a third of each batch and places
            the rest at random (Isensee et al., Nat. Methods 2021). Crops of the pelvis and thorax
            teach the model where an organ is not.
        nnunet_aug: probability that a crop goes through nnU-Net's default augmentation, spatial
            and intensity (see :func:`draw_batch`; 0: the paper's recipe).
        crop_shift: largest offset of a crop from the voxel it is drawn about, per axis, as a
            fraction of the patch (0: centred, the paper's recipe; 0.375: up to 24 voxels of a 64
            patch). Sliding windows at inference place an organ anywhere in a window, also near
            its edge with little of the body around it; centred crops never show it there.
        hard_negatives: share of the ``negatives`` crops centred on the scan's other labelled
            structures instead of on unlabelled voxels (0: the paper's recipe), spread evenly over
            the structures its dataset labels; one the scan does not show gets no crop (MONAI's
            class sampler drops it), so a scan showing few of them gets fewer hard negatives. An organ
            channel then learns where it must stay silent next to tissue that looks like its own
            (a full stomach and a full bladder are both water), which unlabelled voxels, mostly
            fat, muscle and air, seldom show.
        workers: background processes that export the sources and draw crops (0: none). Needed
            to keep a GPU busy; they change the speed, never the result.
    """

    out: Path
    profile: str = "cpu"
    steps: int | None = None
    crops_per_step: int = 1
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 1e-5
    bce_weight: float = 1.0
    cases_per_source: int | None = None
    data_dir: Path = Path("data/pretrain")
    sources: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    checkpoint_every: int = 100
    resume: bool = False
    init: Path | None = None
    balance: str = "sources"
    contrast_aug: float = 0.0
    phase_aug: float = 0.0
    negatives: float = 0.2
    nnunet_aug: float = 0.0
    crop_shift: float = 0.0
    hard_negatives: float = 0.0
    workers: int = 0


def masked_partial_label_loss(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor,
                              bce_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Partial-label loss: per-class Dice + BCE, counted only where the dataset labels the class.

    Args:
        logits: (B, C, X, Y, Z) head outputs.
        target: (B, C, X, Y, Z) 0/1 one-hot targets in the universal template.
        annotated: (B, C) annotation mask w: 1 if sample b's dataset labels class c.

    Returns:
        (total, dice, bce) scalar losses.
    """
    dims = tuple(range(2, logits.ndim))
    prob = torch.sigmoid(logits.float())                                          # (B, C, X, Y, Z)
    inter = (prob * target).sum(dims)                                              # (B, C)
    dice = 1.0 - (2.0 * inter + 1.0) / (prob.sum(dims) + target.sum(dims) + 1.0)   # (B, C), smooth 1
    bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").mean(dims)  # (B, C)
    norm = annotated.sum(1).clamp_min(1.0)                                         # (B,)
    dice_loss = ((dice * annotated).sum(1) / norm).mean()
    bce_loss = ((bce * annotated).sum(1) / norm).mean()
    return dice_loss + bce_weight * bce_loss, dice_loss, bce_loss


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def phantom_sources(data_dir: Path, spacing_mm: float, cases: int, seed: int = 100, workers: int = 0) -> dict[str, str]:
    """Export the five phantom source datasets (MSD layout, each with its real template), each
    with ``workers`` processes generating its cases side by side; returns folder -> template."""
    jobs = [dict(out=Path(data_dir) / f"{domain}_{spacing_mm:g}mm_seed{seed + i}_{cases}cases", layout="msd", cases=cases,
                 seed=seed + i, domain=domain, spacing=spacing_mm, template=template, num_test=0, progress=False)
            for i, (domain, template) in enumerate(SOURCES.items())]
    return {str(export_phantom(**job, workers=max(1, workers)).root): job["template"] for job in jobs}


def load_sources(sources: dict[str, str], spacing_mm: float, patch_size: int) -> list[list[dict]]:
    """Pre-process every volume once; returns one list of cases per source dataset."""
    chain = preprocess(spacing_mm, patch_size)
    loaded = []
    for folder, template in progress_bar(sources.items(), desc="loading sources"):
        ds = open_dataset(folder, template)
        cases = []
        for case in ds.cases:
            d = chain(ds.load(case))
            # the collection stays in memory: windowed intensities in float16 and labels in bytes take
            # 3 bytes a voxel instead of 8 (crops are made float again when a batch is drawn)
            d["image"], d["label"] = d["image"].half(), d["label"].to(torch.uint8)
            d["present"] = sorted(set(torch.unique(d["label"]).int().tolist()) - {0})
            cases.append(d)
        loaded.append(cases)
    return loaded


def pick_case(data: list[list[dict]], rng: np.random.Generator, balance: str = "sources") -> tuple[dict, list[int]]:
    """A case and the label values its positive crops centre on.

    ``sources``: a source uniformly, a case of it, every structure it shows. ``structures``: a
    structure uniformly among all the sources label, a case showing it, that structure only.
    """
    if balance == "sources":
        source = data[rng.integers(len(data))]
        case = source[rng.integers(len(source))]
        return case, list(case["present"])
    if balance != "structures":
        raise ValueError(f"balance={balance!r}; choose 'sources' or 'structures'")
    showing: dict[str, list[dict]] = {}
    for source in data:
        for case in source:
            for value in case["present"]:
                showing.setdefault(case["structures"][value - 1], []).append(case)
    name = sorted(showing)[rng.integers(len(showing))]
    case = showing[name][rng.integers(len(showing[name]))]
    return case, [case["structures"].index(name) + 1]


#: Label value of the margin padded around a scan for wider crops: no class, so never a crop's centre.
OUTSIDE = 255


def draw_batch(data: list[list[dict]], step: int, seed: int, rank: int, patch_size: int, crops: int,
               balance: str = "sources", contrast: float = 0.0, negatives: float = 0.2, phase: float = 0.0,
               nnunet: float = 0.0, shift: float = 0.0, hard: float = 0.0) -> dict:
    """The crops of one step, a pure function of (seed, step, rank): resuming redraws them exactly.

    ``contrast``: probability that a crop's labelled structures each get their own intensity
    shift (``CONTRAST_SHIFT``), a stand-in for another contrast phase: an organ that is only
    labelled in contrast-enhanced sources is then still recognised in plain CT. ``phase``:
    probability that a whole crop's enhanced tissue is pulled toward plain CT (:func:`de_enhance`),
    the labelled organ's neighbours included, with a strength drawn from ``PHASE_STRENGTH``. ``nnunet``:
    probability that a crop goes through nnU-Net's default augmentation (:mod:`fseft_lab.data.augment`:
    scaling and rotation, for other habitus and positions; noise, blur, brightness, contrast, low
    resolution and gamma, for other scanners and slice thicknesses; each with nnU-Net's own
    probability), cut from a crop ``SPATIAL_MARGIN`` times wider about the same centre. ``shift``:
    each crop moved off the voxel it was drawn about by up to that fraction of the patch per axis
    (uniform, whole voxels), so that an organ also lies off-centre, as sliding windows place it. None
    is in the paper; each draws from its own generator, so that turning one on keeps every other draw.
    ``hard``: share of the negative crops centred on the case's other labelled structures.
    """
    rng = np.random.default_rng([seed, step, rank])
    case, targets = pick_case(data, rng, balance)
    num_classes = len(case["structures"]) + 1
    ratios = [0.0] * num_classes
    # weights out of 5, so that the default 0.2 gives the paper's 1 : 4 as exactly the same numbers
    ratios[0] = 5.0 * negatives if targets else 1.0          # negatives: anywhere unlabelled
    others = [v for v in range(1, num_classes) if v not in targets]
    if hard and targets and others:                          # hard negatives: on the other labelled structures
        ratios[0] = 5.0 * negatives * (1.0 - hard)
        for value in others:
            ratios[value] = 5.0 * negatives * hard / len(others)
    for value in targets:                                    # positives: the rest, shared by the targets
        ratios[value] = 5.0 * (1.0 - negatives) / len(targets)
    # with nnU-Net's augmentation, wider crops about the same centres: the scan padded by the extra
    # margin, its label there OUTSIDE, which no crop centres on (a centre drawn as before)
    margin = (math.ceil(patch_size * SPATIAL_MARGIN / 2) * 2 - patch_size) // 2 if nnunet > 0 else 0
    reach = int(shift * patch_size)                          # a shifted crop: cut from one wider by 2 reach
    pad = margin + reach
    volume = {"image": F.pad(torch.as_tensor(case["image"]), (pad,) * 6),
              "label": F.pad(torch.as_tensor(case["label"]), (pad,) * 6, value=OUTSIDE)}
    cropper = RandCropByLabelClassesd(["image", "label"], "label", (patch_size + 2 * pad,) * 3, ratios=ratios,
                                      num_classes=num_classes, num_samples=crops, warn=False)
    cropper.set_random_state(seed=int(rng.integers(2**31)))
    cropped = cropper(volume)
    if reach:
        shift_rng = np.random.default_rng([seed, step, rank, 3])
        for c in cropped:
            corner = reach + shift_rng.integers(-reach, reach + 1, 3)
            window = (slice(None), *(slice(int(a), int(a) + patch_size + 2 * margin) for a in corner))
            c["image"], c["label"] = c["image"][window], c["label"][window]
    augmented = [False] * len(cropped)
    if nnunet > 0:
        nnunet_rng = np.random.default_rng([seed, step, rank, 2])
        augmented = [bool(nnunet_rng.uniform() < nnunet) for _ in cropped]
        for c, on in zip(cropped, augmented):
            c["image"], c["label"] = augment.spatial(c["image"], c["label"], nnunet_rng if on else None, patch_size)
    for c in cropped:
        c["label"][c["label"] == OUTSIDE] = 0                # the padding: no class
    target = UniversalTargetd()  # cases were padded to a patch by preprocess()
    samples = [target({**c, "structures": case["structures"]}) for c in cropped]
    brightness = torch.as_tensor(rng.uniform(-0.1, 0.1, len(samples)) * (rng.uniform(size=len(samples)) < 0.2))
    images = torch.stack([s["image"].as_subclass(torch.Tensor) for s in samples]).float()
    if phase > 0:  # first, on the crops as preprocess() windowed them
        phase_rng = np.random.default_rng([seed, step, rank, 1])
        for b in range(len(images)):
            if phase_rng.uniform() < phase:
                images[b] = de_enhance(images[b], float(phase_rng.uniform(*PHASE_STRENGTH)))
    images = images + brightness.float().view(-1, 1, 1, 1, 1)
    if contrast > 0:  # drawn only when asked, so that runs without it keep their crops
        for image, s in zip(images, samples):
            if rng.uniform() < contrast:
                for c in s["annotated"].nonzero().flatten().tolist():
                    image[0][s["target"][c] > 0] += float(rng.uniform(*CONTRAST_SHIFT))
    for b, on in enumerate(augmented):  # last, as nnU-Net orders them: intensities after the geometry
        if on:
            images[b] = augment.acquisition(images[b], nnunet_rng)
    return {"image": images,
            "target": torch.stack([s["target"] for s in samples]),
            "annotated": torch.stack([s["annotated"] for s in samples])}


class StepCrops(torch.utils.data.Dataset):
    """Item ``s`` is the batch of step ``s``, so a DataLoader's workers can draw ahead. Targets
    travel as 0/1 bytes, 4x lighter than floats."""

    def __init__(self, data: list[list[dict]], cfg: PretrainConfig, rank: int, patch_size: int, steps: int):
        self.data, self.cfg, self.rank, self.patch_size, self.steps = data, cfg, rank, patch_size, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> dict:
        batch = draw_batch(self.data, step, self.cfg.seed, self.rank, self.patch_size, self.cfg.crops_per_step,
                           self.cfg.balance, self.cfg.contrast_aug, self.cfg.negatives, self.cfg.phase_aug,
                           self.cfg.nnunet_aug, self.cfg.crop_shift, self.cfg.hard_negatives)
        return {**batch, "target": batch["target"].to(torch.uint8)}


def half_precision(state: dict) -> dict:
    """Float tensors to float16 for a small file; integer buffers (attention indexes up to 2196,
    beyond float16's exact integers) stay as they are."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def _save_atomic(obj, path: Path) -> None:
    """torch.save through :func:`~fseft_lab.outputs.atomic_write`: a run stopped mid-save keeps its last checkpoint."""
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def pretrain(cfg: PretrainConfig, data: list[list[dict]] | None = None, progress: bool = True) -> FoundationModel:
    """Run (or resume) pre-training; returns the trained model (also saved as ``out/model.pt``)."""
    profile = get_profile(cfg.profile)
    steps = cfg.steps or profile.pretrain_steps
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # every step has the same shapes
    if cfg.workers < 0:
        raise ValueError(f"workers={cfg.workers}; it must be >= 0")
    if not 0 <= cfg.contrast_aug <= 1:
        raise ValueError(f"contrast_aug={cfg.contrast_aug}; it is a probability, in [0, 1]")
    for name in ("phase_aug", "nnunet_aug"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"{name}={getattr(cfg, name)}; it is a probability, in [0, 1]")
    if not 0 <= cfg.crop_shift < 0.5:
        raise ValueError(f"crop_shift={cfg.crop_shift}; it is a fraction of the patch, in [0, 0.5), "
                         "so that the voxel a crop is drawn about stays in it")
    if not 0 <= cfg.negatives < 1:
        raise ValueError(f"negatives={cfg.negatives}; it is the share of crops centred off the organs, in [0, 1)")
    if not 0 <= cfg.hard_negatives <= 1:
        raise ValueError(f"hard_negatives={cfg.hard_negatives}; it is a share of the negative crops, in [0, 1]")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    geometry = profile.geometry
    model = FoundationModel(geometry.feature_size, geometry=geometry).to(device)
    if cfg.init:
        state = read_state_dict(cfg.init, "--init checkpoint")   # on the cpu; load_state_dict copies to the device
        stored = state.pop(GEOMETRY_KEY, None)
        if stored and Geometry(**stored) != geometry:
            raise ValueError(f"--init {cfg.init} was trained at {Geometry(**stored)}, but profile {profile.name} "
                             f"pre-trains at {geometry}: a model has one geometry")
        model.load_state_dict({k: v.float() for k, v in state.items()})
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, cfg.warmup_steps, steps))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    start, elapsed = 0, 0.0
    settings = {k: str(v) for k, v in asdict(cfg).items() if k not in ("resume", "checkpoint_every", "workers")}
    if cfg.resume:
        if not (out / "checkpoint.pt").is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {out / 'checkpoint.pt'}; drop --resume to start a new run")
        # read on the cpu; load_state_dict copies the model's and the optimiser's tensors to their device
        state = read_state_dict(out / "checkpoint.pt", "--resume checkpoint")
        # a setting added after the checkpoint was written counts as its default
        saved = {**{f.name: str(f.default) for f in fields(PretrainConfig) if f.default is not MISSING}, **state["config"]}
        changed = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
        if changed:
            raise ValueError(f"--resume with other settings than the checkpoint's: {changed} (checkpoint, now)")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start, elapsed = state["step"], state["elapsed"]
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model

    if data is None:
        cases = cfg.cases_per_source or profile.cases_per_source
        if world > 1 and rank > 0:
            dist.barrier()  # rank 0 exports the phantom sources first; the others then reuse them
        sources = cfg.sources or phantom_sources(cfg.data_dir, geometry.spacing_mm, cases, workers=cfg.workers)
        if world > 1 and rank == 0:
            dist.barrier()
        data = load_sources(sources, geometry.spacing_mm, geometry.patch_size)
    log_path = out / "log.csv"
    rows = []
    if start and log_path.is_file():  # keep only the rows the checkpoint has seen
        with open(log_path) as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) < start]
    if rank == 0:
        with open(log_path, "w", newline="") as f:
            writer = csv.DictWriter(f, ["step", "loss", "dice", "bce", "lr", "seconds"])
            writer.writeheader()
            writer.writerows(rows)
    ddp.train()
    bar = progress_bar(range(start, steps), initial=start, total=steps, desc="pre-training", disable=not progress or rank > 0)
    batches = torch.utils.data.DataLoader(StepCrops(data, cfg, rank, geometry.patch_size, steps), batch_size=None,
                                          sampler=range(start, steps), num_workers=cfg.workers,
                                          pin_memory=device.type == "cuda")
    batches = iter(batches)
    for step in bar:
        tic = time.perf_counter()
        batch = next(batches)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            logits = ddp(batch["image"].to(device))                                # (B, C, X, Y, Z)
        loss, dice, bce = masked_partial_label_loss(logits, batch["target"].to(device).float(), batch["annotated"].to(device),
                                                    cfg.bce_weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step} (lr {scheduler.get_last_lr()[0]:.2e})")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        elapsed += time.perf_counter() - tic
        if rank == 0:
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow([step, f"{loss.item():.5f}", f"{dice.item():.5f}", f"{bce.item():.5f}",
                                        f"{scheduler.get_last_lr()[0]:.3e}", f"{elapsed:.1f}"])
            bar.set_postfix(loss=f"{loss.item():.3f}", dice=f"{dice.item():.3f}", refresh=False)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == steps:
                _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step + 1,
                              "elapsed": elapsed, "config": settings}, out / "checkpoint.pt")
    if rank == 0:
        _save_atomic({**half_precision(model.state_dict()), **geometry_state(geometry)}, out / "model.pt")
        (out / "run.json").write_text(json.dumps({**{k: str(v) for k, v in asdict(cfg).items()}, "steps": steps,
                                                  "train_seconds": round(elapsed, 1), "world_size": world,
                                                  "device": str(device)}, indent=1))
    if world > 1:
        dist.barrier()
    return model


def zero_shot_phantoms(model: FoundationModel, profile: str | None = None, domains: tuple[str, ...] | None = None,
                       cases: int = 3, seed: int = 900, structures: tuple[str, ...] | None = None,
                       data_dir: Path = Path("data/heldout"), progress: bool = False,
                       largest_component: bool | tuple[bool, ...] = False, masks_out: dict | None = None,
                       spacing: str = "model"):
    """Zero-shot DSC of the foundation model on held-out phantoms of each domain (tidy table), at
    the model's own geometry: raw masks, or (``largest_component=True``) as the course scores
    every method, each one-piece organ reduced to its largest connected component. Both,
    ``(False, True)``: the network runs once per case (its trunk features are kept while the linear
    head maps them under each setting). The ``largest_component`` column says which setting a row has.

    Held-out subjects come from population ``seed`` (the sources use 100-104, the course's
    targets 0-1), exported in MSD layout with the AMOS template, which names all nine base organs.
    Each row says whether the structure is ``visible`` (any voxel in the scan: absent organs and
    organs outside the field of view are not) and ``cut`` (it touches the scan's first or last
    slice: labelled only as far as the field of view goes). ``masks_out``, if given, receives each
    case's (S, X, Y, Z) predicted masks (``structures`` order, the last setting) by (domain, case id),
    so that a figure can show what was scored without running the network again.

    ``spacing``: ``"model"`` exports the subjects at the model's own voxel size; ``"native"`` at
    each domain's own (e.g. 0.8 x 0.8 x 2.5 mm, slices as thick as the site reconstructs), as real
    downloads come, then resampled to the model's like any user's scan. Either way the masks are
    scored at the model's voxel size, as ``fseft-lab adapt`` scores them; the ``spacing`` column
    says which export a row comes from.
    """
    import pandas as pd

    from fseft_lab.anatomy import BASE_ORGANS, template_index
    from fseft_lab.data.phantom import DOMAINS
    from fseft_lab.evaluate import evaluate, trunk_features

    settings = tuple(largest_component) if isinstance(largest_component, (tuple, list)) else (largest_component,)
    geometry = resolve_geometry(model, profile)
    structures = tuple(structures or BASE_ORGANS)
    chain = preprocess(geometry.spacing_mm, geometry.patch_size)
    model.eval()
    tables = []
    if spacing not in ("model", "native"):
        raise ValueError(f"spacing={spacing!r}; choose 'model' (the model's voxel size) or 'native' (each domain's own)")
    for domain in domains or tuple(DOMAINS):
        mm = geometry.spacing_mm if spacing == "model" else None
        folder = f"{domain}_{f'{mm:g}mm' if mm else 'native'}_seed{seed}_{cases}cases"
        ds = export_phantom(Path(data_dir) / folder, "msd", cases=cases, seed=seed, domain=domain, spacing=mm,
                            template="amos", num_test=0, progress=False)
        raw = [ds.load(c, structures) for c in ds.cases]
        seen = pd.DataFrame([{"case": r["case"], "structure": s, "visible": bool((r["label"] == v).any()),
                              "cut": bool((r["label"][..., [0, -1]] == v).any())}
                             for r in raw for v, s in enumerate(structures, start=1)])
        for case in progress_bar(raw, desc=f"zero-shot, {domain}", disable=not progress, leave=False):
            case = chain(case)
            if len(settings) > 1:  # one sliding-window pass, whatever the settings; one case's features at a time
                case["features"] = trunk_features(model, case["image"], geometry.patch_size)
            for setting in settings:
                masks: dict = {}
                table = evaluate(model, [case], [template_index(s) for s in structures], geometry.patch_size,
                                 largest_component=setting, progress=False, masks_out=masks, domain=domain,
                                 source=domain in SOURCES)
                if masks_out is not None:
                    masks_out[(domain, case["case"])] = masks[case["case"]]
                tables.append(table.assign(largest_component=setting, spacing=spacing)
                              .merge(seen, on=["case", "structure"], how="left"))
    return pd.concat(tables, ignore_index=True)
