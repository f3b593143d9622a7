"""Model zoo: the shipped phantom foundation model and the public checkpoints the paper uses.

Each :class:`Checkpoint` says where a file comes from, what is inside it and how its keys map to
:class:`~fseft_lab.models.foundation.FoundationModel` (MONAI SwinUNETR v1 names, head named
``classifier``). Loading is explicit, as in timm's checkpoint filters: unwrap the container,
strip prefixes (``module.``, ``backbone.``), rename (``swin_vit`` -> ``swinViT``, ``mlp.fc`` ->
``mlp.linear``, ``out.conv.conv`` -> ``classifier``), drop what the model cannot use (dynamic
text-driven heads), reorder head rows into the universal template, then refuse any shape
mismatch by name and report missing and unexpected keys. Nothing is downloaded unless
:func:`download` is called (``fseft-lab zoo download NAME``). Taught in notebooks 01 and 10.

Public checkpoints were trained with MONAI < 1.5, whose 3-D patch merging concatenated the
eight sub-grids in a different (duplicating) order; MONAI 1.5 fixed it without changing weight
shapes, so those weights load silently but compute something else. Their entries therefore build
the model with :class:`~fseft_lab.models.foundation.LegacyPatchMerging`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from fseft_lab.anatomy import DATASET_TEMPLATES, UNIVERSAL_TEMPLATE
from fseft_lab.models.foundation import FoundationModel, LegacyPatchMerging  # noqa: F401  (re-exported)
from fseft_lab.outputs import atomic_write
from fseft_lab.profiles import PHANTOM, Geometry
from fseft_lab.progress import progress_bar

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BTCV_CLASSES = (None, *DATASET_TEMPLATES["btcv"].values())  # softmax rows: background first


@dataclass(frozen=True)
class Checkpoint:
    """A model-zoo entry.

    Args:
        name: registry name.
        description: one line for ``zoo list``.
        url: where to get the file (``None``: shipped with the package).
        filename: file name in the cache (or in the package for shipped weights).
        sha256: expected checksum, ``None`` when nobody published one.
        feature_size: SwinUNETR width the weights need.
        spacing_mm, patch_size: the geometry the weights were trained at (every path resamples to
            it; see :mod:`fseft_lab.profiles`). A checkpoint that stores its own geometry wins.
        classes: head rows in file order, as template names (``None`` for rows to skip, e.g. a
            softmax background); empty when the file has no usable plain head.
        container: key holding the state dict (``state_dict``, ``net``), or ``None``.
        strip: prefixes removed from keys, in order.
        renames: (old, new) substrings replaced in keys.
        keep: regular expression of (renamed) keys to keep; others are dropped as unusable.
        may_miss: regular expression of model keys the file may lawfully lack (e.g. the head of a
            backbone-only checkpoint); any other missing key means the file is not this entry's
            kind and loading raises. Empty: the file must provide every key.
        legacy_merging: built with MONAI < 1.5 patch merging.
        manual: the URL is a web page, not a file: the user downloads by hand.
        licence: licence of the weights, as far as it is stated.
        note: what a user must know (partial support, provenance).
    """

    name: str
    description: str
    url: str | None
    filename: str
    sha256: str | None = None
    feature_size: int = 48
    spacing_mm: float = 1.5
    patch_size: int = 96
    classes: tuple = ()
    container: str | None = None
    strip: tuple[str, ...] = ()
    renames: tuple[tuple[str, str], ...] = ()
    keep: str = ".*"
    may_miss: str = ""
    legacy_merging: bool = True
    manual: bool = False
    licence: str = "not stated"
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.spacing_mm, self.patch_size, self.feature_size)


BACKBONE = r"^(swinViT|encoder\d+|decoder\d+)\."
HEAD = r"^classifier\."
ZOO: dict[str, Checkpoint] = {c.name: c for c in (
    Checkpoint("phantom_cpu", "fseft_lab's own foundation model, pre-trained on phantoms (cpu profile, feature 12)",
               None, "phantom_cpu.pt", feature_size=PHANTOM.feature_size, spacing_mm=PHANTOM.spacing_mm,
               patch_size=PHANTOM.patch_size, classes=UNIVERSAL_TEMPLATE, legacy_merging=False,
               licence="Apache-2.0", note="made by `fseft-lab pretrain`; see phantom_cpu.json for the exact run"),
    Checkpoint("fseft", "FSEFT foundation model (Silva-Rodriguez et al. 2025): 9 datasets, 29 structures, sigmoid",
               "https://drive.google.com/file/d/18yLNxmWGnVifQNeYYwyyu56Cg4tWV9aW/view?usp=sharing", "fseft.pth",
               classes=UNIVERSAL_TEMPLATE, container="state_dict", strip=("module.",),
               renames=(("swin_vit", "swinViT"), ("out.conv.conv", "classifier")), manual=True,
               note="Google Drive page: download by hand; channel i = universal template index i"),
    Checkpoint("tang2022_ssl", "self-supervised Swin encoder (Tang et al. 2022), encoder only",
               "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/model_swinvit.pt",
               "model_swinvit.pt", container="state_dict", strip=("module.",),
               renames=(("patch_embed", "swinViT.patch_embed"), ("layers", "swinViT.layers"), (".mlp.fc", ".mlp.linear")),
               keep=r"^swinViT\.", may_miss=r"^(?!swinViT\.)", licence="Apache-2.0 (code); weights not stated",
               note="initialises `scratch` and the self-supervised baselines; decoder and head stay new"),
    Checkpoint("btcv", "MONAI SwinUNETR fine-tuned on BTCV (13 organs, softmax)",
               "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/swin_unetr.base_5000ep_f48_lr2e-4_pretrained.pt",
               "swin_unetr.base_5000ep_f48_lr2e-4_pretrained.pt", classes=BTCV_CLASSES, container="state_dict",
               renames=(("out.conv.conv", "classifier"),), licence="Apache-2.0 (code); weights not stated",
               note="softmax head: its organ rows serve as zero-shot sigmoid rows only approximately"),
    Checkpoint("clip_driven", "CLIP-Driven Universal Model, SwinUNETR backbone (text-driven head not supported)",
               "https://huggingface.co/ljwztc/CLIP-Driven-Universal-Model/resolve/main/clip_driven_universal_swin_unetr.pth",
               "clip_driven_universal_swin_unetr.pth", container="net", strip=("module.", "backbone."), keep=BACKBONE,
               may_miss=HEAD,
               licence="CC BY-NC-ND 4.0",
               note="its head is generated from CLIP text embeddings (a controller), not a conv: backbone only, new head"),
    Checkpoint("suprem_swinunetr", "SuPreM SwinUNETR (AbdomenAtlas), backbone only",
               "https://huggingface.co/MrGiovanni/SuPreM/resolve/main/supervised_suprem_swinunetr_2100.pth",
               "supervised_suprem_swinunetr_2100.pth", container="net", strip=("module.", "backbone."), keep=BACKBONE,
               may_miss=HEAD,
               licence="code MIT; weights not stated", note="same dynamic head as CLIP-Driven: backbone only, new head"),
)}


def get_checkpoint(name: str) -> Checkpoint:
    if name not in ZOO:
        raise ValueError(f"unknown checkpoint {name!r}; the zoo has: {', '.join(ZOO)}")
    return ZOO[name]


def cache_dir() -> Path:
    """Where downloads go: ``$FSEFT_CACHE`` or ``~/.cache/fseft_lab``."""
    return Path(os.environ.get("FSEFT_CACHE", Path.home() / ".cache" / "fseft_lab"))


def local_path(entry: Checkpoint) -> Path:
    return WEIGHTS_DIR / entry.filename if entry.url is None else cache_dir() / entry.filename


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(path: Path) -> str:
    """sha256 of a checkpoint's tensors (names, dtypes, shapes, values), not of its file: the same
    weights saved again, under another name or by another torch version, hash alike."""
    import torch

    digest = hashlib.sha256()

    def add(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                add(f"{prefix}{key}.", value[key])
        elif torch.is_tensor(value):
            digest.update(f"{prefix}|{value.dtype}|{tuple(value.shape)}|".encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(f"{prefix}|{value!r}|".encode())

    add("", read_state_dict(path))
    return digest.hexdigest()


def download(name: str, progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch a public checkpoint into the cache (atomic, checksum-verified where one is known)."""
    entry = get_checkpoint(name)
    target = local_path(entry)
    if target.is_file():
        return target
    if entry.url is None:
        raise FileNotFoundError(f"{name} ships with the package but {target} is missing: reinstall fseft_lab")
    if entry.manual:
        raise RuntimeError(f"{name} is published as a web page, not a file: open {entry.url}, download it and save it as {target}")
    with atomic_write(target) as tmp:   # a ConnectionError or ValueError in the block passes as it is
        try:
            with urllib.request.urlopen(entry.url, timeout=timeout) as response, open(tmp, "wb") as f:
                total = int(response.headers.get("Content-Length", 0)) or None
                with progress_bar(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        f.write(block)
                        bar.update(len(block))
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise ConnectionError(f"could not download {name} from {entry.url} ({err}). Offline? Download it by hand "
                                  f"and save it as {target}") from err
        if entry.sha256 and sha256(tmp) != entry.sha256:
            raise ValueError(f"checksum mismatch for {name}: expected {entry.sha256}; the download was discarded")
    return target


#: Key under which a checkpoint of ours stores its geometry (a dict of plain numbers beside the tensors).
GEOMETRY_KEY = "geometry"


def geometry_state(geometry: Geometry) -> dict:
    """The entry :func:`load_checkpoint` reads back: add it to a state dict before saving."""
    return {GEOMETRY_KEY: {"spacing_mm": float(geometry.spacing_mm), "patch_size": int(geometry.patch_size),
                           "feature_size": int(geometry.feature_size)}}


def checkpoint_geometry(name_or_path: str | Path) -> Geometry:
    """A checkpoint's geometry without building the model: the file's own, else its zoo entry's
    (a file of ours without one was made at the phantom model's geometry, :data:`PHANTOM`)."""
    if str(name_or_path) in ZOO:
        entry = get_checkpoint(str(name_or_path))
        path = local_path(entry)
        if not path.is_file():
            return entry.geometry
    else:
        entry, path = None, Path(name_or_path)
    stored = read_state_dict(path).get(GEOMETRY_KEY)
    return Geometry(**stored) if stored else (entry.geometry if entry else PHANTOM)


@dataclass
class LoadReport:
    missing: list[str]       # model keys the checkpoint did not provide (left as initialised)
    unexpected: list[str]    # checkpoint keys the model has no place for (dropped by ``keep``)
    head_rows: list[str]     # template structures whose head row came from the checkpoint

    def __str__(self) -> str:
        return (f"loaded; {len(self.missing)} missing keys, {len(self.unexpected)} dropped keys, "
                f"{len(self.head_rows)} head rows from the checkpoint")


def read_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` of a checkpoint (or adapter file: ``what`` names it in errors).

    A missing file raises ``FileNotFoundError``; one torch cannot load safely, a one-line
    ``ValueError`` with its path, size in bytes and first 16 bytes. torch's own message is dropped:
    it advises loading again with ``weights_only=False``, which runs whatever code the file pickles.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise
    except Exception:  # over arbitrary bytes: UnpicklingError, RuntimeError, OSError, EOFError, IndexError, KeyError...
        size = path.stat().st_size
        if zipfile.is_zipfile(path):  # a whole archive: a checkpoint of more than tensors, or another zip
            raise ValueError(f"cannot read {what} {path} ({size:,} bytes): a zip archive, but holds objects other than "
                             "tensors, numbers, strings and plain containers, or is no PyTorch archive; such objects "
                             "are not unpickled here, as that could run code from the file") from None
        with open(path, "rb") as f:
            head = f.read(16)
        raise ValueError(f"cannot read {what} {path} ({size:,} bytes, starting {head!r}): not a PyTorch checkpoint "
                         "(a zip archive); a download cut short, or another kind of file") from None


def remap(state: dict, entry: Checkpoint) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Apply an entry's container, prefixes, renames and ``keep`` filter; returns (state, dropped)."""
    if entry.container and entry.container in state:
        state = state[entry.container]
    elif any(k in state for k in ("state_dict", "net", "model")) and not any(torch.is_tensor(v) for v in state.values()):
        state = next(state[k] for k in ("state_dict", "net", "model") if k in state)
    out, dropped = {}, []
    for key, value in state.items():
        for prefix in entry.strip:
            key = key[len(prefix):] if key.startswith(prefix) else key
        for old, new in entry.renames:
            if old in key and new not in key:
                key = key.replace(old, new)
        (out.__setitem__(key, value) if re.search(entry.keep, key) else dropped.append(key))
    return out, dropped


def load_checkpoint(model: torch.nn.Module, source: str | Path | dict, entry: Checkpoint | str,
                    strict: bool = True) -> LoadReport:
    """Load a zoo checkpoint (file or state dict) into a :class:`FoundationModel`.

    Head rows are placed by structure name, so a checkpoint with another class order or fewer
    classes fills the rows it knows. A shape mismatch (e.g. another feature size) raises
    ``ValueError`` naming the key; with ``strict``, keys the model does not have raise too.
    """
    entry = get_checkpoint(entry) if isinstance(entry, str) else entry
    state = read_state_dict(source) if not isinstance(source, dict) else dict(source)
    stored = state.pop(GEOMETRY_KEY, None)      # our own checkpoints say at which geometry they were trained
    state, dropped = remap(state, entry)
    own = model.state_dict()
    unexpected = [k for k in state if k not in own and not k.startswith("classifier.")]
    if unexpected and strict:
        raise ValueError(f"checkpoint has {len(unexpected)} keys this model does not, e.g. {unexpected[:3]}; "
                         f"it is not a {entry.name} checkpoint for SwinUNETR v1 (or pass strict=False)")
    for key, value in state.items():
        expected = own.get(key)
        # head rows are matched by name below: only the feature width of the head must agree
        same = expected is None or (value.shape[1:] == expected.shape[1:] if key.startswith("classifier.")
                                    else value.shape == expected.shape)
        if not same:
            raise ValueError(f"shape mismatch for {key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)} "
                             f"(is the feature size {entry.feature_size}?)")
    missing = [k for k in own if k not in state and not (entry.may_miss and re.search(entry.may_miss, k))]
    if missing:
        loaded = sum(k in own for k in state)
        raise ValueError(f"it is not a {entry.name} checkpoint for this SwinUNETR: it gives {loaded} of the "
                         f"model's {len(own)} weights and lacks {len(missing)} it must have, e.g. {missing[:2]} "
                         "(a file given by path: name its key scheme with --scheme ENTRY, see `fseft-lab zoo list`)")
    head_rows = []
    if "classifier.weight" in state and entry.classes:
        template = list(UNIVERSAL_TEMPLATE)[: own["classifier.weight"].shape[0]]
        weight, bias = own["classifier.weight"].clone(), own["classifier.bias"].clone()
        if state["classifier.weight"].shape[0] != len(entry.classes):
            raise ValueError(f"classifier.weight has {state['classifier.weight'].shape[0]} rows but {entry.name} "
                             f"declares {len(entry.classes)} classes")
        for row, name in enumerate(entry.classes):
            if name in template:
                weight[template.index(name)] = state["classifier.weight"][row].reshape(weight.shape[1:])
                bias[template.index(name)] = state["classifier.bias"][row]
                head_rows.append(name)
        state["classifier.weight"], state["classifier.bias"] = weight, bias
    state = {k: v.to(own[k].dtype) for k, v in state.items() if k in own}
    result = model.load_state_dict(state, strict=False)
    model.geometry = Geometry(**stored) if stored else entry.geometry
    return LoadReport(sorted(result.missing_keys), sorted(dropped + unexpected), head_rows)


def _model_keys() -> set[str]:
    """The key names of every :class:`FoundationModel` (they do not depend on its width)."""
    return set(FoundationModel(12).state_dict())


def detect_scheme(state: dict) -> Checkpoint:
    """The zoo entry whose key scheme a state dict follows: of the entries whose remapping
    (:func:`remap`) gives every key the model must have, the one that gives the most keys (the
    first in :data:`ZOO` on a tie) and whose head, if it declares one, has the file's rows. None:
    ``ValueError`` asking for the scheme by name. CLIP-Driven and SuPreM files share one scheme:
    both are found as ``clip_driven``."""
    names, best, found_most = _model_keys(), None, -1
    for entry in ZOO.values():
        remapped = remap(state, entry)[0]
        found = names & set(remapped)
        needed = {k for k in names if not (entry.may_miss and re.search(entry.may_miss, k))}
        head = remapped.get("classifier.weight")
        if entry.classes and head is not None and head.shape[0] != len(entry.classes):
            continue    # e.g. BTCV's 14 softmax rows are not the FSEFT model's 29, though both name them out.conv.conv
        if needed <= found and len(found) > found_most:
            best, found_most = entry, len(found)
    if best is None:
        inner = next((state[k] for k in ("state_dict", "net", "model") if isinstance(state.get(k), dict)), state)
        keys = [k for k in inner if k != GEOMETRY_KEY][:3]
        raise ValueError(f"the checkpoint's keys (e.g. {keys}) follow no zoo entry's key scheme: it is not a SwinUNETR "
                         f"v1 checkpoint this project knows; if it is one, name its scheme with --scheme ENTRY "
                         f"(one of {', '.join(ZOO)})")
    return best


def with_file_width(entry: Checkpoint, state: dict) -> Checkpoint:
    """``entry`` with the SwinUNETR width (feature size) of the weights in ``state``, read off the
    patch embedding, so that a file of another width than its entry's still builds its model."""
    embed = remap(state, entry)[0].get("swinViT.patch_embed.proj.weight")
    return entry if embed is None else replace(entry, feature_size=int(embed.shape[0]))


def load_foundation(name_or_path: str | Path = "phantom_cpu", entry: str | None = None) -> FoundationModel:
    """Build a :class:`FoundationModel` and load a checkpoint: a zoo name, or a file whose key
    scheme is an entry's (``entry='fseft'``) or is detected from its keys (:func:`detect_scheme`;
    a ``model.pt`` made by ``fseft-lab pretrain`` follows ``phantom_cpu``'s). A file that is not
    what its entry says (another architecture) raises; the width is read from the file."""
    if str(name_or_path) in ZOO:
        entry_obj = get_checkpoint(str(name_or_path))
        path = local_path(entry_obj)
        if not path.is_file():
            raise FileNotFoundError(f"{entry_obj.name} is not in {path.parent}; run `fseft-lab zoo download {entry_obj.name}`"
                                    + (f" or download {entry_obj.url} by hand to {path}" if entry_obj.url else ""))
        state = read_state_dict(path)
    else:
        path = Path(name_or_path)
        state = read_state_dict(path)
        try:
            entry_obj = get_checkpoint(entry) if entry else detect_scheme(state)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        if entry_obj.url is None:   # a run of our own, named after its file
            entry_obj = replace(entry_obj, name=path.name)
    entry_obj = with_file_width(entry_obj, state)
    model = FoundationModel(entry_obj.feature_size, legacy_merging=entry_obj.legacy_merging)
    try:
        model.load_report = load_checkpoint(model, state, entry_obj)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    model.scheme = entry_obj.name
    return model


def manifest(name: str = "phantom_cpu") -> dict:
    """The shipped model's manifest (command, seed, versions, hardware, wall time, sha256, Dice)."""
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest {path}")
    return json.loads(path.read_text())
