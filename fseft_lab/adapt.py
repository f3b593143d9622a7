"""The few-shot trainer: the paper's adaptation protocol in one loop, with a feature cache.

One **epoch** visits each of the k support volumes once; a **step** takes ``crops_per_volume``
random patches of one volume (positive:negative 1:1, the batch is one volume). AdamW without
weight decay; the learning rate warms up for one epoch, then follows a cosine to zero; each
method has the paper's learning rate (``Method.lr``; 1e-4 whenever the decoder trains). Training
stops early when the 10-epoch moving average of the Dice loss improved by less than 0.001 over
the last 20 epochs (checked from epoch 31). Binary tasks use a sigmoid per structure (Dice +
binary cross-entropy), multi-class tasks a softmax with a background channel (Dice + cross-entropy).

**Feature cache** (:mod:`fseft_lab.crop_bank`): whatever is frozen at the start of the network
gives the same output for a crop at every step, so the crops are drawn once into a bank and that
output is computed once per crop; only the part that trains runs at each step.

>>> result = adapt(foundation, "spatial_adapter", support)          # doctest: +SKIP
>>> result.curve.plot(x="epoch", y="dice_loss")                     # doctest: +SKIP
"""
from __future__ import annotations

import copy
import math
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from fseft_lab.crop_bank import cache_level, crop_banks, draw_crops, only_head_trains, pick_from_bank
from fseft_lab.evaluate import evaluate, trunk_features
from fseft_lab.methods import build, get_method, proximal_step, trainable_parameters
from fseft_lab.models.foundation import resolve_geometry
from fseft_lab.pretrain import warmup_cosine
from fseft_lab.profiles import get_profile
from fseft_lab.progress import progress_bar
from fseft_lab.transductive import QueryTerm, TransductiveConfig


@dataclass
class AdaptConfig:
    """Adaptation settings; ``None`` means the profile's value (or the method's learning rate).

    Args:
        epochs: maximum epochs (200 in the paper); default the profile's ``num_epochs``, or its
            ``cached_epochs`` (200) when the feature cache makes epochs cheap; with transductive
            inference, its config's ``epochs`` (the reference's 100).
        crops_per_volume: random crops per support volume and step (6 in the paper).
        lr: peak learning rate; default the method's paper rate, 1e-4 when the decoder trains.
        weight_decay: AdamW weight decay (0 in the paper).
        warmup_epochs: linear warm-up, then cosine decay to zero at the last epoch.
        pos_fraction: fraction of crops centred on the task's structures (1:1 in the paper).
        stop_window, stop_patience, stop_min_delta, stop_start: early stopping on the moving
            average of the training Dice loss (10, 20, 0.001, 31 in the paper); 0 patience: never.
        feature_cache: train on cached trunk features (only the head trains) or cached encoder
            states (the Swin encoder is frozen, the decoder trains); default: whenever possible.
        crop_bank: crops drawn once per volume and reused; default ``8 x crops_per_volume`` with
            the cache (fewer when fewer epochs will not use them all: ``min(8, epochs) x``), else
            fresh crops every step (the paper).
        validate_every: validation Dice every N epochs (and after the last), if volumes are given.
        seed: seeds the new weights and every crop.
        amp: mixed precision on CUDA.
    """

    epochs: int | None = None
    crops_per_volume: int | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    warmup_epochs: int = 1
    pos_fraction: float = 0.5
    stop_window: int = 10
    stop_patience: int = 20
    stop_min_delta: float = 1e-3
    stop_start: int = 31
    feature_cache: bool | None = None
    crop_bank: int | None = None
    validate_every: int = 5
    seed: int = 0
    amp: bool = True

    def label(self) -> str:
        """What this config changes of the defaults, the seed aside, as a results row records it:
        ``"default"``, or e.g. ``"epochs=200, lr=0.001"``. Two runs that differ here are two runs."""
        default = AdaptConfig()
        changed = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                   if f.name != "seed" and getattr(self, f.name) != getattr(default, f.name)]
        return ", ".join(changed) or "default"


@dataclass
class Adapted:
    """What :func:`adapt` returns: the model and how its training went."""

    model: nn.Module
    curve: pd.DataFrame        # one row per epoch: epoch, loss, dice_loss, lr, seconds, val_dice
    train_seconds: float
    epochs_run: int
    stopped_early: bool
    trainable: int
    cached: bool
    peak_memory_mb: float      # CUDA: max allocated; CPU: the process's peak resident memory so far
    lr: float
    test_masks: dict = field(default_factory=dict)  # filled by experiments.run: case id -> (S, X, Y, Z) masks
    per_volume: dict = field(default_factory=dict)  # per-volume TI: query case id -> its own Adapted


def task_target(label: torch.Tensor, num_structures: int, multiclass: bool) -> torch.Tensor:
    """(B, 1, X, Y, Z) label map (value i = structure i) -> (B, C, X, Y, Z) one-hot target;
    C = structures (sigmoid) or background + structures (softmax)."""
    values = range(0 if multiclass else 1, num_structures + 1)
    return torch.cat([(label == v) for v in values], 1).float()


def check_support(support: Sequence[dict]) -> tuple[str, ...]:
    """The support set's structures; refuses an empty set, mixed tasks, or a structure no volume shows."""
    if not support:
        raise ValueError("the support set is empty: few-shot adaptation needs k >= 1 labelled volumes")
    structures = tuple(support[0]["structures"])
    for case in support:
        if tuple(case["structures"]) != structures:
            raise ValueError(f"case {case.get('case')} is labelled for {case['structures']}, not {structures}")
    for i, s in enumerate(structures, start=1):
        if not any(bool((torch.as_tensor(c["label"]) == i).any()) for c in support):
            raise ValueError(f"no support volume shows {s!r} (its masks are empty in "
                             f"{[c.get('case') for c in support]}): nothing to learn it from")
    return structures


def plateaued(dice_losses: Sequence[float], cfg: AdaptConfig) -> bool:
    """The paper's early stop: the moving average improved by < min_delta over ``stop_patience`` epochs."""
    w, p = cfg.stop_window, cfg.stop_patience
    if p <= 0 or len(dice_losses) < max(cfg.stop_start, w + p):
        return False
    average = np.convolve(dice_losses, np.ones(w) / w, mode="valid")   # average[i]: epochs i .. i+w-1
    return average[-1 - p] - average[-1] < cfg.stop_min_delta


def adapt(foundation: nn.Module, method: str, support: Sequence[dict], *, multiclass: bool = False,
          decoder: str = "frozen", validation: Sequence[dict] = (), config: AdaptConfig | None = None,
          profile: str | None = None, bank_cache: dict | None = None, query: Sequence[dict] = (),
          transductive: TransductiveConfig | None = None, progress: bool = True, patch_size: int | None = None,
          structures: Sequence[str] = (), **options) -> Adapted:
    """Adapt ``foundation`` to the task the support volumes are labelled for.

    Args:
        foundation: the pre-trained model (left untouched: the method works on a copy).
        method: a registered method name (``fseft-lab methods`` lists them).
        support: pre-processed cases (``CaseFolder.load`` + ``preprocess``) labelled for the same
            structures: label value i is ``structures[i - 1]``.
        multiclass: one softmax over background + structures instead of a sigmoid per structure.
        decoder: ``frozen``, ``fine-tuned`` or ``new``.
        validation: optional labelled volumes scored every ``validate_every`` epochs.
        config: :class:`AdaptConfig`; ``profile`` fills its ``None`` sizes.
        bank_cache: a dict shared by several calls: frozen-trunk methods trained on the same
            support crops (same seed and bank) then compute the bank's trunk features once.
        query: unlabelled volumes to segment (their labels are never read); with
            ``transductive`` they join training (:mod:`fseft_lab.transductive`), and the learning
            curve gains their mean predicted size (``query_size/<structure>``, voxels) every
            ``validate_every`` epochs and at the last.
        transductive: :class:`TransductiveConfig`; needs a frozen trunk (only the head trains).
            Training then runs every epoch (no early stop, as in the reference schedule), since
            the query term starts part-way through. With the ``per_volume`` protocol and several
            query volumes, each gets its own adaptation on the support plus itself (the result's
            ``per_volume``, by case id; the result itself is the first's). Their epochs before the
            query term starts are the same for all, so they are trained once and each adaptation
            goes on from a copy: the same models as separate calls, for less time.
        patch_size: crop and sliding-window size; default: the foundation model's own
            (:func:`~fseft_lab.models.foundation.resolve_geometry`).
        structures: the task's structures, needed only when ``support`` is empty: zero-shot
            learns nothing from support volumes and may be given none.
        options: the method's own options (e.g. ``rank=8`` for LoRA).

    The steps: the protocol's checks (:func:`_check_protocol`), the method's model, the schedule
    (:func:`_schedule`), the crop banks and their cached features (:func:`_crop_banks`), then the
    training loop (:func:`_train`) with its early stop (:func:`plateaued`), forked per query volume
    for per-volume TI (:func:`_per_volume`).
    """
    cfg, prof = config or AdaptConfig(), get_profile(profile)
    patch = patch_size or resolve_geometry(foundation, profile).patch_size
    structures = _check_protocol(cfg, support, structures)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    model = build(foundation, method, structures, multiclass, decoder, **options).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:  # zero-shot: nothing to train
        return Adapted(model.eval(), pd.DataFrame(columns=["epoch", "loss", "dice_loss", "lr", "seconds", "val_dice"]),
                       0.0, 0, False, 0, False, _peak_memory_mb(device), 0.0)
    schedule = _schedule(model, method, decoder, support, cfg, prof, transductive)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    start = time.perf_counter()
    banks = crop_banks(model, foundation, support, structures, schedule, patch, bank_cache, device, progress)
    if schedule.level == "trunk":  # validation volumes too: the trunk once, then only the head at each validation
        validation = [{**c, "features": trunk_features(model, c["image"], patch)} for c in validation]
    # with lambda = 0 the query never moves the model: one adaptation serves every query volume
    per_volume = (transductive is not None and transductive.protocol == "per_volume" and transductive.weight > 0
                  and len(query) > 1)
    terms = [None] if transductive is None else \
        [QueryTerm(model, support, group, structures, multiclass, transductive, patch, schedule.epochs, device)
         for group in ([[q] for q in query] if per_volume else [query])]
    job = _Training(model, params, method, support, banks, validation, terms[0], schedule, len(structures), multiclass,
                    patch, device, start, DiceLoss(sigmoid=not multiclass, softmax=multiclass, batch=True))
    steppers = _steppers(job)
    if per_volume:
        return _per_volume(job, steppers, query, terms, progress)
    rows, stopped = _train(job, steppers, range(schedule.epochs), progress)
    return _adapted(job, rows, stopped)


def _per_volume(job: _Training, steppers: tuple, query: Sequence[dict], terms: list[QueryTerm], progress: bool) -> Adapted:
    """Per-volume TI: the epochs before the query term starts do not depend on the query volume, so
    they are trained once; each volume's adaptation goes on from a copy of the model and of the
    optimiser's state. Returns the first volume's result, with every volume's in ``per_volume``."""
    model = job.model
    shared, _ = _train(job, steppers, range(terms[0].start_epoch), progress, log_terms=terms)
    state = copy.deepcopy((model.state_dict(), [s.state_dict() for s in steppers]))
    shared_seconds, results = time.perf_counter() - job.start, {}
    for i, (case, term) in enumerate(zip(query, terms)):
        job.model = copy.deepcopy(model) if i < len(terms) - 1 else model
        job.model.load_state_dict(state[0])
        job.params, job.term = [p for p in job.model.parameters() if p.requires_grad], term
        steppers = _steppers(job)
        for stepper, saved in zip(steppers, copy.deepcopy(state[1])):
            stepper.load_state_dict(saved)
        job.start = time.perf_counter() - shared_seconds   # each one's seconds include the shared epochs
        rows, stopped = _train(job, steppers, range(term.start_epoch, job.schedule.epochs), progress)
        own = [{**{k: v for k, v in r.items() if k != "query_sizes"}, **r["query_sizes"][i]} for r in shared]
        results[case.get("case", i)] = _adapted(job, own + rows, stopped)
    first = next(iter(results.values()))
    first.per_volume = results
    return first


def _adapted(job: _Training, rows: list[dict], stopped: bool) -> Adapted:
    """The :class:`Adapted` result of a finished training loop."""
    curve = pd.DataFrame(rows)
    if job.term is not None:
        curve.attrs["size_prior"] = job.term.prior
    return Adapted(job.model.eval(), curve, time.perf_counter() - job.start, len(rows), stopped,
                   trainable_parameters(job.model), job.schedule.level is not None, _peak_memory_mb(job.device),
                   job.schedule.lr)


# ----------------------------------------------------------------------------- adapt's steps
def _check_protocol(cfg: AdaptConfig, support: Sequence[dict], structures: Sequence[str]) -> tuple[str, ...]:
    """The task's structures, from the support volumes (:func:`check_support`) or, with none (zero-shot
    may be given none), as given; refuses a ``pos_fraction`` outside [0, 1]."""
    if not 0.0 <= cfg.pos_fraction <= 1.0:
        raise ValueError(f"pos_fraction={cfg.pos_fraction} must lie in [0, 1]")
    return check_support(support) if support or not structures else tuple(structures)


@dataclass
class _Schedule:
    """The numbers of one adaptation, settled before it trains (:func:`_schedule`)."""

    cfg: AdaptConfig
    epochs: int
    crops: int                 # crops per support volume and step
    lr: float                  # peak learning rate
    level: str | None          # what the crop banks cache (:func:`cache_level`); None: no feature cache
    bank_size: int | None      # crops banked per support volume; None: fresh crops every step


def _schedule(model: nn.Module, method: str, decoder: str, support: Sequence[dict], cfg: AdaptConfig, prof,
              transductive: TransductiveConfig | None) -> _Schedule:
    """Epochs, crops, learning rate and feature cache for a model that trains: the config's values,
    else the profile's and the method's. Refuses what the protocol cannot run: no support volume, a
    feature cache the model cannot use, fewer than one epoch or crop, transductive inference with a
    trunk that trains."""
    check_support(support)  # a method that trains needs support volumes
    level = cache_level(model) if cfg.feature_cache is not False else None
    if cfg.feature_cache and level is None:
        raise ValueError(f"feature_cache needs a frozen encoder, but {method} (decoder {decoder}) trains the Swin encoder")
    epochs = cfg.epochs or (transductive and transductive.epochs) or (prof.cached_epochs if level == "trunk" else prof.num_epochs)
    crops = cfg.crops_per_volume or prof.crops_per_volume
    if epochs < 1 or crops < 1:
        raise ValueError(f"epochs={epochs} and crops_per_volume={crops} must be >= 1")
    if transductive and not only_head_trains(model):
        raise ValueError(f"transductive inference updates only the adapter and head, but {method} "
                         f"(decoder {decoder}) trains the trunk; use a black-box method such as spatial_adapter")
    lr = cfg.lr or (1e-4 if decoder != "frozen" else get_method(method).lr)
    # a bank larger than the crops the epochs will draw only costs trunk passes
    bank_size = cfg.crop_bank or (min(8, epochs) * crops if level is not None else None)
    return _Schedule(cfg, epochs, crops, lr, level, bank_size)


@dataclass
class _Training:
    """What the training loop works on (:func:`_train`)."""

    model: nn.Module
    params: list[nn.Parameter]     # the parameters that train
    method: str
    support: Sequence[dict]
    banks: list | None             # (inputs, labels) per support volume (:func:`_crop_banks`)
    validation: Sequence[dict]
    term: QueryTerm | None         # transductive inference's query term
    schedule: _Schedule
    num_structures: int
    multiclass: bool
    patch: int
    device: torch.device
    start: float                   # time.perf_counter() when adaptation began: the curve's seconds
    dice_loss: nn.Module

    @property
    def use_amp(self) -> bool:
        return self.schedule.cfg.amp and self.device.type == "cuda"


def _steppers(job: _Training) -> tuple:
    """What moves the weights: AdamW over the parameters that train, its warm-up-then-cosine rate
    per step, and the AMP scaler."""
    cfg, epochs = job.schedule.cfg, job.schedule.epochs
    optimizer = torch.optim.AdamW(job.params, lr=job.schedule.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(job.support)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.warmup_epochs * steps_per_epoch, epochs * steps_per_epoch))
    return optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=job.use_amp)


def _train(job: _Training, steppers: tuple, epochs: range, progress: bool,
           log_terms: Sequence[QueryTerm] = ()) -> tuple[list[dict], bool]:
    """The training loop over ``epochs`` (all of them, or a part, the optimiser's state going on):
    each epoch the support steps (:func:`_support_steps`), the query step (:func:`_query_step`) and
    a row of the learning curve, with the validation Dice every ``validate_every`` epochs. Stops
    early when the loss plateaus (:func:`plateaued`; never with a query term). ``log_terms``: log
    the predicted sizes of each of these terms' queries (the row's ``query_sizes``, a list) instead
    of the job's own. Returns the rows and whether it stopped early."""
    cfg, term = job.schedule.cfg, job.term
    optimizer, scheduler, scaler = steppers
    rows, stopped = [], False
    bar = progress_bar(total=job.schedule.epochs, initial=epochs.start, desc=f"adapting: {job.method}",
                       disable=not progress)
    for epoch in epochs:
        job.model.train()
        losses, dices = _support_steps(job, epoch, optimizer, scheduler, scaler)
        query_loss = _query_step(job, epoch, optimizer, scheduler)
        scheduler.step()
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "dice_loss": float(np.mean(dices)),
               "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - job.start, "val_dice": math.nan}
        if query_loss is not None:
            row["query_loss"] = query_loss.item()
        if term is not None and ((cfg.validate_every and epoch % cfg.validate_every == 0) or epoch == job.schedule.epochs - 1):
            if log_terms:
                row["query_sizes"] = [t.logged_sizes(job.model.classifier) for t in log_terms]
            else:
                row.update(term.logged_sizes(job.model.classifier))  # every query volume: as often as validation
        elif log_terms:
            row["query_sizes"] = [{} for _ in log_terms]
        stopped = term is None and plateaued([r["dice_loss"] for r in rows] + [row["dice_loss"]], cfg)
        last = stopped or epoch == job.schedule.epochs - 1
        if job.validation and cfg.validate_every and ((epoch + 1) % cfg.validate_every == 0 or last):
            row["val_dice"] = validation_dice(job.model, job.validation, job.patch)
        rows.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", refresh=False)
        bar.update()
        if stopped:  # the bar says why it ends short of its total
            bar.set_postfix_str(f"loss={row['loss']:.3f}, stopped early at epoch {len(rows)}: the loss plateaued "
                                f"(its {cfg.stop_window}-epoch mean improved < {cfg.stop_min_delta:g} "
                                f"in {cfg.stop_patience} epochs)")
            break
    bar.close()
    return rows, stopped


def _support_steps(job: _Training, epoch: int, optimizer: torch.optim.Optimizer, scheduler, scaler) -> tuple[list, list]:
    """One epoch's support steps, one per support volume in a seeded random order; a step's crops
    come from the volume's bank (positives and negatives stratified) or are drawn afresh. Returns the
    steps' losses and Dice losses."""
    cfg, crops = job.schedule.cfg, job.schedule.crops
    losses, dices = [], []
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(job.support))
    for step, v in enumerate(order):
        rng = np.random.default_rng([cfg.seed, epoch, int(v)])
        if job.banks:  # the bank holds its positive crops first: pick positives and negatives stratified
            x, label = pick_from_bank(job.banks[v], rng, crops, cfg.pos_fraction)
        else:
            image, label = draw_crops(job.support[v], crops, job.patch, cfg.pos_fraction, seed=int(rng.integers(2**31)))
            x = (image,)
        target = task_target(label, job.num_structures, job.multiclass).to(job.device)
        d, loss = _step_loss(job, x, target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{job.method}: the loss is {loss.item()} at epoch {epoch}, step {len(losses)}, "
                                     f"learning rate {scheduler.get_last_lr()[0]:.2e}; try a lower --lr")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        proximal_step(job.model, scheduler.get_last_lr()[0])
        if step < len(order) - 1:  # the epoch's last step moves the rate on after the query step
            scheduler.step()
        losses.append(loss.item())
        dices.append(d.item())
    return losses, dices


def _step_loss(job: _Training, x: Sequence[torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Dice loss and the whole loss (Dice + cross-entropy) on one step's crops ``x``: the head
    alone on cached trunk features, decoder and head on cached encoder states, else the whole model."""
    model, level = job.model, job.schedule.level
    x = [t.to(job.device).float() for t in x]
    if level is not None:
        x = [t.contiguous(memory_format=torch.channels_last_3d) for t in x]
    with torch.autocast(job.device.type, dtype=torch.float16, enabled=job.use_amp):
        if level == "trunk":
            logits = model.classifier(x[0])
        elif level == "encoder":
            logits = model.classifier(model.decode(x[0], x[1:]))
        else:
            logits = model(x[0])
    logits = logits.float()
    d = job.dice_loss(logits, target)
    ce = (F.cross_entropy(logits, target.argmax(1)) if job.multiclass
          else F.binary_cross_entropy_with_logits(logits, target))
    return d, d + ce


def _query_step(job: _Training, epoch: int, optimizer: torch.optim.Optimizer, scheduler) -> torch.Tensor | None:
    """Transductive inference's step on the query volumes: one per epoch from the term's start epoch,
    at the last support step's rate. Returns its loss (None before the start, or without a term)."""
    term = job.term
    if term is None or epoch < term.start_epoch:
        return None
    query_loss = term.loss(job.model.classifier, epoch)
    if term.config.weight > 0:  # lambda = 0 only logs: an Adam step on a zero gradient still moves
        optimizer.zero_grad(set_to_none=True)
        query_loss.backward()
        optimizer.step()
        proximal_step(job.model, scheduler.get_last_lr()[0])
    return query_loss


def validation_dice(model: nn.Module, cases: Sequence[dict], patch_size: int) -> float:
    """Mean Dice over the validation volumes and the task's structures, by the course's one
    evaluation function (cases carrying ``features`` skip the frozen trunk)."""
    model.eval()
    n = len(model.task_structures) - model.multiclass
    channels = list(range(1, n + 1)) if model.multiclass else list(range(n))
    dice = evaluate(model, cases, channels, patch_size, model.multiclass, progress=False).dice.mean()
    model.train()
    return float(dice)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
