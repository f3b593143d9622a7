"""Experiments: one adapt-and-evaluate run, grids of them, all in one tidy table.

A **run** is (task, method, k, seed): draw the few-shot split, adapt on the k support volumes
(the extra drawn volume validates), segment the task's fixed test volumes and score them. Its
rows, one per (test case, structure), carry everything a plot needs: method, k, seed, task,
decoder, Dice, HD95, NSD, trainable parameters, train seconds, peak memory. A **grid** appends
the rows of every run to one CSV and skips the runs already in it, so an interrupted grid
resumes where it stopped. Plots that read the table live in :mod:`fseft_lab.viz`.

>>> table, result = run(foundation, dataset, "liver", "linear_probe", k=1, seed=0)   # doctest: +SKIP
>>> table, result = run(foundation, dataset, "liver", "lora", 1, 0, RunOptions(profile="cpu"), rank=4)   # doctest: +SKIP
"""
from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fseft_lab.adapt import AdaptConfig, Adapted, adapt
from fseft_lab.anatomy import is_one_piece, task_structures
from fseft_lab.crop_bank import frozen_trunk
from fseft_lab.data.cache import CachedCases
from fseft_lab.data.fewshot import Extent, FewShotSplit, default_num_test, extents, few_shot_split, not_a_support
from fseft_lab.data.layouts import CaseFolder
from fseft_lab.data.transforms import preprocess
from fseft_lab.evaluate import evaluate, trunk_features
from fseft_lab.methods import get_method, save_adapter
from fseft_lab.models.foundation import resolve_geometry
from fseft_lab.outputs import atomic_write
from fseft_lab.profiles import Geometry, get_profile
from fseft_lab.progress import progress_bar
from fseft_lab.transductive import TransductiveConfig

#: The columns that identify a run: a grid skips runs whose key is already in its CSV.
RUN_KEY = ["task", "method", "decoder", "transductive", "k", "seed", "config"]


def load_cases(dataset: CaseFolder, case_ids: Sequence[str], structures: Sequence[str], geometry: Geometry,
               cache_dir: str | Path | None = None) -> list[dict]:
    """Load and pre-process cases for a task (label value i = ``structures[i - 1]``) at a model's
    geometry; with ``cache_dir``, through the on-disk cache of :mod:`fseft_lab.data.cache`."""
    if cache_dir is not None:
        return list(CachedCases(dataset, structures, geometry, cache_dir, case_ids))
    chain = preprocess(geometry.spacing_mm, geometry.patch_size)
    return [chain(dataset.load(c, tuple(structures))) for c in case_ids]


def _label_value(dataset: CaseFolder, name: str) -> str:
    """`` (label value 2 in its label map)`` for a structure of an MSD folder, else nothing."""
    values = [v for v, s in dataset.template.items() if s == name] if dataset.layout == "msd" else []
    return f" (label value {values[0]} in its label map)" if values else ""


def _check_labelled(dataset: CaseFolder, support: list[dict], structures: Sequence[str]) -> None:
    """Refuse a task whose structure has no voxel in any support volume: nothing to learn from,
    most often a label map naming a value the files never hold."""
    for value, name in enumerate(structures, start=1):
        if not any((case["label"] == value).any() for case in support):
            where = _label_value(dataset, name)
            raise ValueError(f"{name!r}{where} has no voxel in any support volume ({', '.join(c['case'] for c in support)}) "
                             f"of {dataset.root}: check the label map, or that these scans show the structure")


_EXTENTS: dict[tuple, dict[str, Extent]] = {}


def case_extents(dataset: CaseFolder, case: str, structures: Sequence[str]) -> dict[str, Extent]:
    """How the case shows each structure (:class:`~fseft_lab.data.fewshot.Extent`: mL, cut by the
    scan's end), from its label files at their own voxel size; read once per (folder, case, structures)."""
    key = (str(dataset.root), case, tuple(structures))
    if key not in _EXTENTS:
        label = dataset.load(case, tuple(structures))["label"]
        voxel_ml = float(np.prod(np.linalg.norm(np.asarray(label.affine)[:3, :3], axis=0))) / 1000.0
        _EXTENTS[key] = extents(label.numpy(), voxel_ml, structures)
    return _EXTENTS[key]


def showing(dataset: CaseFolder, case_ids: Sequence[str], structures: Sequence[str]) -> list[str]:
    """The cases whose labels show at least one of ``structures``: an organ may be absent
    (removed by surgery) or outside the scan's field of view, as in TotalSegmentator, whose masks
    are then empty. Test volumes are drawn among these, as the paper's task splits hold volumes
    that show their structure."""
    return [c for c in case_ids if any(e.ml > 0 for e in case_extents(dataset, c, structures).values())]


def supports(dataset: CaseFolder, case_ids: Sequence[str], structures: Sequence[str]) -> list[str]:
    """The cases that may be support or validation volumes: they show every structure whole
    (:func:`~fseft_lab.data.fewshot.not_a_support`)."""
    return [c for c in case_ids if not_a_support(case_extents(dataset, c, structures)) is None]


def trunk_key(foundation, dataset: CaseFolder, case_id: str) -> tuple:
    """Key of a test volume's trunk features in a ``trunk_cache``."""
    return id(foundation), str(dataset.root), case_id


def task_cases(dataset: CaseFolder, task: str, warn: bool = True) -> list[str]:
    """The cases a task can use: those with a mask for each of its structures that show at least
    one of them (:func:`showing`). None at all raises, naming how many cases there are and why."""
    structures, _ = task_structures(task, dataset.structures)
    lacking = dataset.lacking(structures)
    if lacking and warn:
        warnings.warn(f"{len(lacking)} case(s) of {dataset.root} have no mask for part of task {task!r} and are left out: "
                      + ", ".join(f"{case} (no {', '.join(names)})" for case, names in sorted(lacking.items())[:5])
                      + (" ..." if len(lacking) > 5 else ""), stacklevel=3)
    usable = showing(dataset, [c for c in dataset.case_ids if c not in lacking], structures)
    if not usable:
        named = ", ".join(f"{s!r}{_label_value(dataset, s)}" for s in structures)
        raise ValueError(f"task {task!r} needs labelled volumes that show it, but {named} has no voxel in any of the "
                         f"{len(dataset.cases) - len(lacking)} cases of {dataset.root} that label it"
                         + (f" ({len(lacking)} more have no mask for it)" if lacking else "")
                         + ": check the label map, or that these scans show the structure")
    return usable


def split_for(dataset: CaseFolder, task: str, k: int, seed: int, test_split: Sequence[str] | int | None = None,
              warn: bool = True, whole: bool = True) -> FewShotSplit:
    """A run's few-shot split among the cases the task can use (:func:`task_cases`).

    ``test_split``: the test cases by name, or their number (the last N; 0 scores nothing), or
    ``None``: the cases the dataset marks as test cases, else :func:`default_num_test` of them.
    Support and validation volumes show the task's structures whole (:func:`supports`);
    ``whole=False`` lifts that rule, for a method that learns nothing from them (zero-shot)."""
    structures, _ = task_structures(task, dataset.structures)
    usable = task_cases(dataset, task, warn)
    pool = supports(dataset, usable, structures) if whole else None
    if isinstance(test_split, int):
        return few_shot_split(usable, k, seed, num_test=test_split, supports=pool)
    if test_split is not None:
        return few_shot_split(usable, k, seed, test=list(test_split), supports=pool)
    marked = [c for c in dataset.test_ids if c in usable]
    if marked and len(marked) < len(usable):
        return few_shot_split(usable, k, seed, test=marked, supports=pool)
    return few_shot_split(usable, k, seed, num_test=default_num_test(len(usable)), supports=pool)


@dataclass(frozen=True)
class RunOptions:
    """How :func:`run` (and :func:`run_grid`) adapts and scores, beyond the run's (task, method, k, seed).

    Args:
        decoder: ``frozen``, ``fine-tuned`` or ``new`` (:func:`fseft_lab.adapt.adapt`).
        profile: the compute profile (``cpu``, ``gpu``, ``paper``); default: picked for this machine.
        config: :class:`~fseft_lab.adapt.AdaptConfig` (epochs, crops, learning rate); its ``seed``
            is replaced by the run's.
        largest_component: the evaluation's post-processing (:func:`fseft_lab.evaluate.evaluate`);
            the rows' ``post_processing`` column says what each structure got.
        save_adapter_to: write the adapter file (``.pt``) there; with per-volume transductive
            inference and several test volumes, one per volume, named ``STEM_CASE.pt``.
        adapter_meta: more fields for the adapter file (e.g. the checkpoint it was trained from).
        validate: score the split's validation volume during training (the learning curve's ``val_dice``).
        trunk_cache: a dict shared by several runs: methods whose trunk stays frozen then run the
            trunk over each test volume (and each banked support crop) once, not once per method.
        test_split: which volumes are test cases: by name, or their number (the last N; 0: none,
            nothing is scored), or ``None``: the dataset's own (see :func:`split_for`).
        test: score only these of the test cases, by name (e.g. fewer of them on a laptop).
        transductive: :class:`~fseft_lab.transductive.TransductiveConfig`: the test volumes,
            unlabelled, join the adaptation as query volumes (:mod:`fseft_lab.transductive`); the
            rows' ``transductive`` column names the mode (``none`` without) and ``ti_protocol``
            the protocol: ``per_volume`` (the default) adapts once per test volume, each row's
            model saw only its own volume (the result returned is the first volume's, with
            ``per_volume``: case -> result); ``pooled`` adapts one model for all.
        cache_dir: keep pre-processed volumes there (:class:`fseft_lab.data.cache.CachedCases`),
            so the next run skips reading and resampling.
        spacing_mm: force a voxel size (mm) other than the foundation model's own, with a warning
            (:func:`~fseft_lab.models.foundation.resolve_geometry`); default: the model's.
        patch_size: force a patch size (voxels per side) other than the model's own, likewise.
        progress: show progress bars (a grid shows its own bar and none per run).
    """

    decoder: str = "frozen"
    profile: str | None = None
    config: AdaptConfig | None = None
    largest_component: bool = True
    save_adapter_to: str | Path | None = None
    adapter_meta: dict | None = None
    validate: bool = False
    trunk_cache: dict | None = None
    test_split: Sequence[str] | int | None = None
    test: Sequence[str] | None = None
    transductive: TransductiveConfig | None = None
    cache_dir: str | Path | None = None
    spacing_mm: float | None = None
    patch_size: int | None = None
    progress: bool = True


def run(foundation, dataset: CaseFolder, task: str, method: str, k: int, seed: int, options: RunOptions = RunOptions(),
        **method_options) -> tuple[pd.DataFrame, Adapted]:
    """Adapt ``foundation`` to ``task`` with k shots (draw ``seed``) and score the test volumes.

    Args:
        foundation: the pre-trained model (:func:`fseft_lab.models.zoo.load_foundation`).
        dataset: the target data (:class:`~fseft_lab.data.layouts.CaseFolder`).
        task: a structure, or several joined by commas (one multi-class task).
        method: a registered method name (``fseft-lab methods`` lists them).
        k: support volumes (shots).
        seed: the draw: which volumes are support and validation, and every random number of the adaptation.
        options: :class:`RunOptions`: decoder, profile, post-processing, test volumes, caches, ...
        method_options: the method's own options (e.g. ``rank=8`` for LoRA).

    Returns:
        The rows, one per (test case, structure): Dice, HD95, NSD, the run's settings, trainable
        parameters, train seconds, peak memory; ``cut`` flags a structure the scan cuts at its end;
        ``run_seconds`` is the whole run's wall time (loading, trunk features, training, evaluation).
        And the :class:`~fseft_lab.adapt.Adapted` result, with the test volumes' masks.

    >>> run(foundation, dataset, "liver", "lora", 1, 0, RunOptions(profile="cpu"), rank=4)   # doctest: +SKIP
    """
    misplaced = sorted(set(method_options) & {f.name for f in fields(RunOptions)})
    if misplaced:
        raise TypeError(f"run() got {', '.join(misplaced)} as a method option, but it is a RunOptions field: "
                        f"pass options=RunOptions({misplaced[0]}=...)")
    start = time.perf_counter()
    transductive, trunk_cache = options.transductive, options.trunk_cache
    structures, multiclass = task_structures(task, dataset.structures)
    geometry = resolve_geometry(foundation, options.profile, options.spacing_mm, options.patch_size)
    get_method(method)  # an unknown method fails before any data is loaded
    trains = method != "zero_shot"   # zero-shot learns nothing from the support volumes
    split = split_for(dataset, task, k, seed, options.test_split, whole=trains)
    test_ids = list(options.test) if options.test is not None else split.test
    seen = sorted(set(test_ids) & set(split.support))
    if seen:
        raise ValueError(f"test cases {seen} are in the support set of draw seed={seed}, k={k} ({', '.join(split.support)}): "
                         "a test volume must be one the adaptation never saw")
    support = load_cases(dataset, split.support, structures, geometry, options.cache_dir) if trains else []
    if trains:
        _check_labelled(dataset, support, structures)
    validation = load_cases(dataset, split.validation, structures, geometry, options.cache_dir) if options.validate else []
    test_cases = load_cases(dataset, test_ids, structures, geometry, options.cache_dir)
    if transductive is not None:  # the query volumes' trunk features are needed during training
        _attach_trunk_features(foundation, dataset, test_cases, trunk_cache, geometry, options.progress)
    # one adaptation for all test volumes; with per-volume TI (the reference's protocol), one per test volume
    per_volume = transductive is not None and transductive.protocol == "per_volume"
    channels = list(range(1, len(structures) + 1)) if multiclass else list(range(len(structures)))
    result = adapt(foundation, method, support, multiclass=multiclass, decoder=options.decoder, validation=validation,
                   config=replace(options.config or AdaptConfig(), seed=seed), profile=options.profile, progress=options.progress,
                   patch_size=geometry.patch_size,
                   bank_cache=None if trunk_cache is None else trunk_cache.setdefault(("banks", str(dataset.root)), {}),
                   query=[{k: v for k, v in c.items() if k != "label"} for c in test_cases] if transductive else (),
                   transductive=transductive, structures=structures, **method_options)
    if per_volume and not result.per_volume:   # one test volume, or lambda = 0: one adaptation serves all
        result.per_volume = {case["case"]: result for case in test_cases}
    groups = [([case], result.per_volume[case["case"]]) for case in test_cases] if per_volume else [(test_cases, result)]
    tables, masks = [], {}
    for group, adapted in groups:
        if options.save_adapter_to:
            path = Path(options.save_adapter_to)
            path = path.with_name(f"{path.stem}_{group[0]['case']}{path.suffix}") if len(groups) > 1 else path
            save_adapter(adapted.model, path, task=task, k=k, seed=seed, support=list(split.support),
                         profile=get_profile(options.profile).name, geometry=asdict(geometry),
                         **({"query": group[0]["case"]} if per_volume else {}), **(options.adapter_meta or {}))
        if trunk_cache is not None and frozen_trunk(adapted.model):
            _attach_trunk_features(foundation, dataset, group, trunk_cache, geometry, options.progress)
        tables.append(evaluate(adapted.model, group, channels, geometry.patch_size, multiclass, options.largest_component,
                               progress=options.progress, masks_out=masks, task=task, method=method, decoder=options.decoder,
                               transductive=transductive.label if transductive else "none",
                               ti_protocol=transductive.protocol if transductive else "none", k=k, seed=seed,
                               config=(options.config or AdaptConfig()).label(),
                               trainable_params=adapted.trainable, train_seconds=round(adapted.train_seconds, 2),
                               epochs=adapted.epochs_run, cached=adapted.cached,
                               peak_memory_mb=round(adapted.peak_memory_mb, 1)))
    table = pd.concat(tables, ignore_index=True)
    # a structure the test scan cuts at its end is scored, and flagged: tables give whole and cut apart
    table["cut"] = [case_extents(dataset, c, structures)[s].cut for c, s in zip(table.get("case", []), table.get("structure", []))]
    table["run_seconds"] = round(time.perf_counter() - start, 1)
    result.test_masks.update(masks)
    return table, result


def _attach_trunk_features(foundation, dataset: CaseFolder, cases: list[dict], trunk_cache: dict | None,
                           geometry: Geometry, progress: bool) -> None:
    """Give each case its frozen trunk's features, computed once per (model, dataset, case)."""
    trunk_cache = {} if trunk_cache is None else trunk_cache
    keys = [trunk_key(foundation, dataset, c["case"]) for c in cases]
    for case, key in progress_bar(list(zip(cases, keys)), desc="trunk features of the test volumes", leave=False,
                          disable=not progress or all(k in trunk_cache for k in keys)):
        if key not in trunk_cache:
            trunk_cache[key] = trunk_features(foundation, case["image"], geometry.patch_size)
        case["features"] = trunk_cache[key]


def run_grid(foundation, dataset: CaseFolder, out_csv: str | Path, tasks: Sequence[str], methods: Sequence[str],
             ks: Sequence[int], seeds: Sequence[int], options: RunOptions = RunOptions()) -> pd.DataFrame:
    """Run every (task, method, k, seed) not yet in ``out_csv``; returns the whole table.

    ``options``: every run's :class:`RunOptions`; its ``trunk_cache`` shares frozen-trunk features
    with other grids on the same data, ``progress`` shows the grid's bar (none per run). A table holds
    one post-processing (``largest_component``) and one transductive protocol only, so a table whose
    rows were scored otherwise is refused before any run starts; ``save_adapter_to`` is refused (a
    grid trains many adapters: save them with :func:`run`).

    Each finished run is appended at once (written to a temporary file, then renamed), so an
    interrupted grid loses at most the run in progress.
    """
    if options.save_adapter_to:
        raise ValueError(f"save_adapter_to={str(options.save_adapter_to)!r}: a grid trains one adapter per run, a file "
                         "holds one; save adapters with run()")
    transductive = options.transductive
    for task in tasks:
        task_structures(task, getattr(dataset, "structures", ()))
    for method in methods:
        get_method(method)
    out_csv = Path(out_csv)
    table = pd.read_csv(out_csv) if out_csv.is_file() else pd.DataFrame(columns=RUN_KEY)
    if "transductive" not in table:  # tables written before transductive inference existed
        table.insert(table.columns.get_loc("decoder") + 1, "transductive", "none")
    if "ti_protocol" not in table:  # tables written before the per-volume protocol: their TI rows were pooled
        table["ti_protocol"] = table["transductive"].map(lambda m: "none" if str(m) == "none" else "pooled")
    table = with_config(table)
    check_post_processing(table, options.largest_component, out_csv)
    ti_rows = table[table["transductive"].astype(str) != "none"]
    if transductive and (ti_rows["ti_protocol"] != transductive.protocol).any():
        raise ValueError(f"{out_csv} holds transductive rows of protocol {ti_rows['ti_protocol'].iloc[0]!r}, this grid "
                         f"runs {transductive.protocol!r}: one table, one protocol; write to another file")
    done = done_runs(table)
    mode = transductive.label if transductive else "none"
    config = (options.config or AdaptConfig()).label()
    todo = [(t, m, k, s) for t, m, k, s in itertools.product(tasks, methods, ks, seeds)
            if run_key(t, m, options.decoder, mode, k, s, config) not in done]
    each = replace(options, trunk_cache={} if options.trunk_cache is None else options.trunk_cache, progress=False)
    for task, method, k, seed in progress_bar(todo, desc="grid", disable=not options.progress):
        rows, _ = run(foundation, dataset, task, method, k, seed, each)
        rows = rows.assign(device=environment()["hardware"]["device"])   # train_seconds depend on it
        table = rows if table.empty else pd.concat([table, rows], ignore_index=True)
        write_csv(table, out_csv)
    return table


def check_post_processing(table: pd.DataFrame, largest_component: bool, where: str | Path) -> None:
    """Refuse to add rows post-processed one way to a table scored the other way (rows from before
    the ``post_processing`` column were scored raw)."""
    if table.empty or "structure" not in table:
        return
    done = table["post_processing"].fillna("none") if "post_processing" in table else pd.Series("none", table.index)
    expected = table.structure.map(lambda s: "largest component" if largest_component and is_one_piece(s) else "none")
    differ = done != expected
    if differ.any():
        rows = table[differ]
        raise ValueError(f"{where} holds {len(rows)} rows post-processed otherwise ({rows.structure.iloc[0]}: "
                         f"{done[differ].iloc[0]!r}) than this run would ({expected[differ].iloc[0]!r}); one table, one "
                         "post-processing: write to another file, or score as the table was ("
                         + ("--largest-component" if not largest_component else "--no-largest-component") + ")")


def run_key(task: str, method: str, decoder: str, transductive: str, k: int, seed: int,
            config: str = "default") -> tuple[str, ...]:
    """One run's key (:data:`RUN_KEY`, as text), as :func:`done_runs` gives it; ``config`` is
    :meth:`AdaptConfig.label <fseft_lab.adapt.AdaptConfig.label>`."""
    return tuple(map(str, (task, method, decoder, transductive, k, seed, config)))


def with_config(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its ``config`` column (:meth:`AdaptConfig.label <fseft_lab.adapt.AdaptConfig.label>`),
    ``"default"`` where rows were written before runs recorded it (they ran on the defaults)."""
    return table.assign(config=table["config"].fillna("default") if "config" in table else "default")


def done_runs(table: pd.DataFrame) -> set[tuple]:
    """The run keys (:func:`run_key`) a results table holds."""
    if table.empty:
        return set()
    return {tuple(str(v) for v in key) for key in with_config(table)[RUN_KEY].drop_duplicates().itertuples(index=False)}


def append_rows(rows: pd.DataFrame, out_csv: str | Path) -> pd.DataFrame:
    """Add rows to a CSV (created if missing), atomically; returns the whole table."""
    out_csv = Path(out_csv)
    table = pd.concat([pd.read_csv(out_csv), rows], ignore_index=True) if out_csv.is_file() else rows
    write_csv(table, out_csv)
    return table


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write ``table`` to ``path`` atomically (:func:`fseft_lab.outputs.atomic_write`)."""
    with atomic_write(path) as tmp:
        table.to_csv(tmp, index=False)


def summary(table: pd.DataFrame, by: Sequence[str] = ("method", "k")) -> pd.DataFrame:
    """Mean Dice per run (over cases and structures), then mean and std over seeds, with parameters.

    Where the table has them: ``hd95``, the mean HD95 (mm; a missed structure counts at its cap,
    :mod:`fseft_lab.evaluate`), and ``missed``, how many (case, structure) rows of all seeds the
    predictions missed entirely (Dice 0): failures are counted, not averaged away.
    """
    extra = {c: (c, "mean" if c == "hd95" else "sum") for c in ("hd95", "missed") if c in table}
    per_run = table.groupby(list(by) + ["seed"], sort=False).agg(dice=("dice", "mean"), params=("trainable_params", "first"),
                                                                 seconds=("train_seconds", "first"), **extra)
    return per_run.groupby(list(by), sort=False).agg(dice=("dice", "mean"), dice_std=("dice", "std"),
                                                      params=("params", "first"), seconds=("seconds", "mean"), **extra)


def claim(scores, better: str, worse: str, about: str, margin: float = 0.0) -> str:
    """A notebook's claim as one line a checked cell prints: does ``better`` score above ``worse``
    by more than ``margin``? ``scores`` maps names to mean Dice (a Series or a dict); the figures
    follow, rounded to two decimals, so the line is stable and the text can quote it. The verdict
    compares those printed figures: a gain they cannot show counts as none, so a line never reads
    "True (0.93 vs 0.93)".

    >>> claim({"spatial_adapter": 0.412, "zero_shot": 0.138}, "spatial_adapter", "zero_shot", "the oesophagus")
    'spatial_adapter > zero_shot on the oesophagus: True (0.41 vs 0.14)'
    """
    a, b = float(scores[better]), float(scores[worse])
    by = f" by more than {margin:g}" if margin else ""
    holds = round(a, 2) - round(b, 2) > margin + 1e-9      # 1e-9: 0.57 - 0.56 is 0.0099999... in floats
    return f"{better} > {worse}{by} on {about}: {holds} ({a:.2f} vs {b:.2f})"


def environment() -> dict:
    """Software and hardware a result was measured with (for a results manifest)."""
    import os
    import platform

    import monai
    import numpy as np
    import torch

    from fseft_lab.profiles import MALLOC_ENV

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"software": {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
                         "numpy": np.__version__, "pandas": pd.__version__},
            "hardware": {"machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                         "device": device,
                         "malloc": {k: os.environ[k] for k in MALLOC_ENV if k in os.environ}}}


def write_manifest(path: str | Path, **fields) -> None:
    """Write a results manifest (JSON: the given fields plus :func:`environment`) atomically."""
    import json

    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps({**fields, **environment()}, indent=2) + "\n")
