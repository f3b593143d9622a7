"""Adaptation methods: one small file each, all registered by name.

A method is a ``@dataclass`` config plus ``apply(model, cfg) -> model`` that freezes the
foundation model, then wraps or unfreezes what the method trains. :func:`build` is the one way
to make an adapted model: copy the foundation model, give it a head for the task (rows taken
from the pre-trained head for known structures, new rows for novel ones), apply the method,
then the decoder option. Registering a method enrols it in ``tests/test_methods.py``.

>>> model = build(foundation, "spatial_adapter", ["liver"])          # doctest: +SKIP
>>> print_trainable_parameters(model)                                # doctest: +SKIP
"""
from __future__ import annotations

import copy
import importlib
import math
import pkgutil
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace

import torch
from torch import nn

from fseft_lab.anatomy import UNIVERSAL_TEMPLATE, check_structure
from fseft_lab.models.zoo import read_state_dict
from fseft_lab.outputs import atomic_write

DECODER_MODULES = ("encoder1", "encoder2", "encoder3", "encoder4", "encoder10",
                   "decoder5", "decoder4", "decoder3", "decoder2", "decoder1")
DECODER_OPTIONS = ("frozen", "fine-tuned", "new")


@dataclass(frozen=True)
class Method:
    name: str
    config: type
    apply: Callable[[nn.Module, object], nn.Module]
    lr: float            # the paper's learning rate for this method (decoder frozen)
    variants: dict = field(default_factory=dict)  # label -> config overrides: other versions worth counting


REGISTRY: dict[str, Method] = {}
#: The order the paper (and the course) presents the methods in; later registrations follow.
ORDER = ("zero_shot", "linear_probe", "adapter_1x1", "spatial_adapter", "bitfit", "affine_ln", "lora",
         "adaptive_lora", "adaptformer", "compacter", "full_ft", "scratch")


def register(name: str, config: type, lr: float, variants: dict | None = None):
    """Decorator: ``@register("lora", LoRAConfig, lr=1e-3)`` on ``apply``. ``variants``: other
    versions of the method (label -> config overrides) that ``fseft-lab methods`` counts too,
    e.g. the course's earlier version of a method that now follows the reference code."""
    def wrap(fn):
        if name in REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        REGISTRY[name] = Method(name, config, fn, lr, dict(variants or {}))
        return fn
    return wrap


def get_method(name: str) -> Method:
    _load_all()
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(method_names())}")
    return REGISTRY[name]


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def method_names() -> list[str]:
    """Every registered method, in the course's order."""
    _load_all()
    return sorted(REGISTRY, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m))


def freeze(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def swin_modules(model: nn.Module, kind: type) -> list[tuple[str, nn.Module]]:
    """Modules of a type inside the Swin encoder only (``norm1``, ``proj`` also occur elsewhere)."""
    return [(n, m) for n, m in model.named_modules() if n.startswith("swinViT.") and isinstance(m, kind)]


def set_task_head(model: nn.Module, structures: list[str] | tuple[str, ...], multiclass: bool = False) -> nn.Module:
    """Replace the universal head by a task head: (F -> len(structures)), plus a background row
    first for multi-class (softmax) tasks. Rows of structures in the template start from the
    pre-trained row (zero-shot); novel structures get a new row. The background row starts at
    zero: a softmax over (0, sigmoid logits) picks structure i exactly where its sigmoid is above
    0.5 and highest, so zero-shot multi-class is the universal model's thresholded arg-max."""
    old = model.classifier
    rows = (["background"] if multiclass else []) + [check_structure(s, None) for s in structures]
    # a checkpoint loaded from the zoo says which rows it really had (e.g. none for a self-supervised one)
    known = set(model.load_report.head_rows) if hasattr(model, "load_report") else set(UNIVERSAL_TEMPLATE)
    missing = [s for s in rows if s in UNIVERSAL_TEMPLATE and s not in known]
    if missing:
        warnings.warn(f"the foundation model's checkpoint has no head row for {missing}: they start from a new row "
                      "(like a novel structure), so zero-shot predicts nothing for them", stacklevel=2)
    head = nn.Conv3d(old.in_channels, len(rows), kernel_size=1)
    with torch.no_grad():
        head.bias.fill_(math.log(0.02 / 0.98))  # new rows start at p = 0.02, like the foundation head
        if multiclass:
            head.weight[0], head.bias[0] = 0.0, 0.0  # background logit 0 = the sigmoid's 0.5 threshold
        for i, s in enumerate(rows):
            if s in UNIVERSAL_TEMPLATE[: old.out_channels] and s in known:
                head.weight[i] = old.weight[UNIVERSAL_TEMPLATE.index(s)]
                head.bias[i] = old.bias[UNIVERSAL_TEMPLATE.index(s)]
    model.classifier, model.task_structures, model.multiclass = head, tuple(rows), multiclass
    return model


def build(foundation: nn.Module, method: str, structures, multiclass: bool = False, decoder: str = "frozen",
          **overrides) -> nn.Module:
    """Copy ``foundation``, give it a task head, apply ``method`` (config fields may be overridden)."""
    spec = get_method(method)
    if decoder not in DECODER_OPTIONS:
        raise ValueError(f"decoder={decoder!r}; choose one of {DECODER_OPTIONS}")
    names = {f.name for f in fields(spec.config)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"{method} has no option {unknown}; its options: {sorted(names)}")
    cfg = replace(spec.config(), **overrides)
    model = set_task_head(copy.deepcopy(foundation), structures, multiclass)
    model = spec.apply(model, cfg)
    if decoder != "frozen":
        for name in DECODER_MODULES:
            module = getattr(model, name)
            if decoder == "new":
                for m in module.modules():
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
            module.requires_grad_(True)
    model.method, model.decoder, model.options = method, decoder, asdict(cfg)   # every option, defaults too
    return model


def proximal_step(model: nn.Module, lr: float) -> None:
    """After each optimiser step: modules with a ``proximal(lr)`` method (adaptive-rank LoRA's
    soft-thresholding) apply it. Nothing happens for every other method."""
    for module in model.modules():
        if hasattr(module, "proximal"):
            module.proximal(lr)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def print_trainable_parameters(model: nn.Module) -> None:
    total = sum(p.numel() for p in model.parameters())
    n = trainable_parameters(model)
    print(f"trainable params: {n:,} || all params: {total:,} || trainable: {100 * n / total:.4f}%")


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only what the method trained: a few KB instead of the whole model."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {n: t.detach().clone() for n, t in model.state_dict().items() if n in trainable}


def load_adapter(foundation: nn.Module, state: dict[str, torch.Tensor], method: str, structures,
                 multiclass: bool = False, decoder: str = "frozen", **overrides) -> nn.Module:
    """Rebuild the adapted model on a fresh foundation model and load its adapter weights."""
    model = build(foundation, method, structures, multiclass, decoder, **overrides)
    missing = sorted(set(adapter_state_dict(model)) - set(state))
    if missing:
        raise ValueError(f"adapter file lacks {len(missing)} trained tensors of {method}, e.g. {missing[:3]}")
    model.load_state_dict(state, strict=False)
    return model


ADAPTER_FILE_FORMAT = 2   # 2: "options" holds every option's value; 1 (no "format" key): only those set by hand


def save_adapter(model: nn.Module, path, **meta) -> int:
    """Write the adapter (trained tensors + how to rebuild the model) atomically; returns its size in bytes.
    Every option is recorded, defaults too, so a file keeps meaning what it meant when a default changes."""
    from pathlib import Path

    path = Path(path)
    state = {"format": ADAPTER_FILE_FORMAT, "method": model.method, "decoder": model.decoder,
             "multiclass": model.multiclass,
             "structures": [s for s in model.task_structures if s != "background" or not model.multiclass],
             "options": getattr(model, "options", {}), "meta": meta, "state": adapter_state_dict(model)}
    with atomic_write(path) as tmp:   # an error names the file; no half-written adapter is left
        torch.save(state, tmp)
    return path.stat().st_size


def load_adapter_file(foundation: nn.Module, path) -> nn.Module:
    """Rebuild an adapted model from a file written by :func:`save_adapter`."""
    saved = read_state_dict(path, "adapter file")
    if not isinstance(saved, dict) or "state" not in saved or "method" not in saved:
        raise ValueError(f"{path} is not an fseft-lab adapter file (no 'method' and 'state')")
    defaults = asdict(get_method(saved["method"]).config())
    if "format" not in saved and set(defaults) - set(saved["options"]):
        defaults.update(saved["options"])
        warnings.warn(f"{path} predates adapter files that record every option: it is rebuilt with today's "
                      f"defaults, {saved['method']} {defaults}; if it was trained with other ones, train it again",
                      stacklevel=2)
    return load_adapter(foundation, saved["state"], saved["method"], saved["structures"], saved["multiclass"],
                        saved["decoder"], **saved["options"])
