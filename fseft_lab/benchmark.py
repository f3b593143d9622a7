"""The FSEFT benchmark: a committed grid file of experiments, run resumably into one tidy CSV.

A grid is a TOML file (``grids/fseft_phantom.toml``) of blocks; each block names a phantom
target dataset and the tasks, methods, shots and seeds to run on it::

    [[block]]
    name = "base organs, binary, TotalSegmentator-like"
    dataset = { layout = "totalsegmentator", seed = 0 }
    tasks = ["liver", "spleen"]
    methods = ["zero_shot", "linear_probe", "spatial_adapter+penalty"]
    ks = [1, 5, 10]
    seeds = [0, 1, 2]
    decoder = "frozen"            # optional
    adapt = { lr = 1e-3 }         # optional: AdaptConfig settings for every run of the block

``method+mode`` runs the method with constrained transductive inference (``penalty``,
``barrier`` or ``entropy``), adapted once per test volume (the reference's protocol);
``method+mode/pooled`` adapts one model for all test volumes (how the grid's committed TI rows
were measured; a table holds one protocol). Every finished run is appended to the CSV at once, so an
interrupted benchmark resumes where it stopped (:func:`fseft_lab.experiments.run_grid`); a
manifest beside the CSV records the command, grid, checkpoint, software, hardware and wall time.
One benchmark writes to a table at a time (a lock file beside it refuses a second one).

>>> run_benchmark("grids/fseft_phantom.toml", "results/benchmark_cpu.csv", profile="cpu")   # doctest: +SKIP
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import pandas as pd

from fseft_lab.adapt import AdaptConfig
from fseft_lab.anatomy import task_structures
from fseft_lab.data.layouts import LAYOUTS, CaseFolder, export_phantom
from fseft_lab.experiments import RunOptions, check_post_processing, done_runs, environment, run_grid, run_key, with_config, write_csv
from fseft_lab.methods import DECODER_OPTIONS, get_method
from fseft_lab.outputs import atomic_write
from fseft_lab.profiles import get_profile
from fseft_lab.progress import progress_bar
from fseft_lab.transductive import MODES, PROTOCOLS, TransductiveConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

BLOCK_KEYS = {"name", "dataset", "tasks", "methods", "ks", "seeds", "decoder", "adapt"}
OPTIONAL_KEYS = {"decoder", "adapt"}
DATASET_KEYS = {"layout", "seed", "domain", "template", "cases", "num_test"}


@dataclass
class Block:
    name: str
    dataset: dict
    tasks: list[str]
    methods: list[str]
    ks: list[int]
    seeds: list[int]
    decoder: str = "frozen"
    adapt: dict = field(default_factory=dict)    # AdaptConfig fields for every run, e.g. {"lr": 1e-3}
    runs: int = field(init=False)

    def __post_init__(self):
        self.runs = len(self.tasks) * len(self.methods) * len(self.ks) * len(self.seeds)

    def config(self) -> AdaptConfig | None:
        """The block's :class:`~fseft_lab.adapt.AdaptConfig` (None: every default)."""
        return AdaptConfig(**self.adapt) if self.adapt else None

    def label(self) -> str:
        """The ``config`` its rows record (:meth:`AdaptConfig.label <fseft_lab.adapt.AdaptConfig.label>`):
        the same method on other settings, in another block, is another run."""
        return (self.config() or AdaptConfig()).label()


def split_method(spec: str) -> tuple[str, TransductiveConfig | None]:
    """``"spatial_adapter+penalty"`` -> ("spatial_adapter", TransductiveConfig("penalty")), per-volume
    TI (the default); ``"spatial_adapter+penalty/pooled"``: the pooled protocol;
    ``"spatial_adapter+none"``: no query term on TI's schedule (``weight`` 0), the baseline that
    compares TI with none on equal schedules."""
    method, _, ti = spec.partition("+")
    mode, _, protocol = ti.partition("/")
    if mode == "none":
        return method, TransductiveConfig(weight=0.0, protocol=protocol or "per_volume")
    return method, (TransductiveConfig(mode, protocol=protocol or "per_volume") if mode else None)


def read_grid(path: str | Path) -> list[Block]:
    """Read and check a grid file: every name, method, task and number is checked before anything runs."""
    path = Path(path)
    try:
        grid = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no grid file {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from err
    if not grid.get("block"):
        raise ValueError(f"{path} has no [[block]] tables")
    blocks = []
    for i, raw in enumerate(grid["block"], start=1):
        where = f"{path}, block {i} ({raw.get('name', 'unnamed')})"
        unknown = set(raw) - BLOCK_KEYS
        missing = BLOCK_KEYS - OPTIONAL_KEYS - set(raw)
        if unknown or missing:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; "
                             f"a block has {sorted(BLOCK_KEYS)}")
        if set(raw["dataset"]) - DATASET_KEYS or raw["dataset"].get("layout") not in LAYOUTS:
            raise ValueError(f"{where}: dataset {raw['dataset']} needs a layout in {LAYOUTS} and only keys "
                             f"{sorted(DATASET_KEYS)}")
        for task in raw["tasks"]:
            task_structures(task)
        for spec in raw["methods"]:
            method, _, mode = spec.partition("+")
            mode, _, protocol = mode.partition("/")
            get_method(method)
            if protocol and protocol not in PROTOCOLS:
                raise ValueError(f"{where}: method {spec!r}: transductive protocol {protocol!r} is not one of {PROTOCOLS}")
            if mode and mode not in MODES + ("none",):
                raise ValueError(f"{where}: method {spec!r}: transductive mode {mode!r} is not one of {MODES} "
                                 "or none (TI's schedule without the query term)")
        settable = {f.name for f in fields(AdaptConfig)} - {"seed"}     # the seed is the grid's
        if set(raw.get("adapt", {})) - settable:
            raise ValueError(f"{where}: adapt settings {sorted(set(raw['adapt']) - settable)} are not AdaptConfig "
                             f"fields; choose among {sorted(settable)}")
        if raw.get("decoder", "frozen") not in DECODER_OPTIONS:
            raise ValueError(f"{where}: decoder {raw['decoder']!r} is not one of {DECODER_OPTIONS}")
        if not raw["ks"] or min(raw["ks"]) < 1 or not raw["seeds"]:
            raise ValueError(f"{where}: ks {raw['ks']} must be positive and seeds {raw['seeds']} non-empty")
        blocks.append(Block(**raw))
    return blocks


def block_dataset(block: Block, data_dir: str | Path, profile, spacing_mm: float) -> CaseFolder:
    """Export (or reuse) the phantom target dataset a block runs on, at the model's spacing."""
    d = block.dataset
    name = f"{d['layout']}_{d.get('domain', 'default')}_seed{d.get('seed', 0)}_{profile.name}_{spacing_mm:g}mm"
    return export_phantom(Path(data_dir) / name, d["layout"], cases=d.get("cases", profile.target_cases),
                          seed=d.get("seed", 0), domain=d.get("domain"), spacing=spacing_mm,
                          template=d.get("template", "flare22"), num_test=d.get("num_test"), progress=False)


def shard_csv(out_csv: Path, shard: tuple[int, int]) -> Path:
    """Where worker ``i`` of ``n`` writes its rows: ``bench.csv`` -> ``bench.shard-1-of-4.csv``."""
    return out_csv.with_name(f"{out_csv.stem}.shard-{shard[0]}-of-{shard[1]}.csv")


def fold_shards(out_csv: Path) -> pd.DataFrame:
    """Move the rows that parallel workers left in shard files into ``out_csv`` (atomically), then
    delete the shard files; returns the whole table. Rows already in ``out_csv`` are not added
    twice, so folding the same shard again changes nothing."""
    shards = sorted(out_csv.parent.glob(f"{out_csv.stem}.shard-*-of-*.csv"))
    tables = [with_config(pd.read_csv(f)) for f in ([out_csv] if out_csv.is_file() else []) + shards]
    table = (pd.concat([t for t in tables if not t.empty], ignore_index=True).drop_duplicates(ignore_index=True)
             if tables else pd.DataFrame())
    if shards:
        write_csv(table, out_csv)
        for f in shards:
            f.unlink()
    return table


@contextmanager
def writing_to(out_csv: Path):
    """Hold ``out_csv``'s lock file while a benchmark writes to it. A second benchmark on the same
    table is refused: it would fold the shard files of the first one's running workers."""
    lock = out_csv.with_name(f".{out_csv.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            text = lock.read_text().strip()
            if text.isdigit() and _alive(int(text)):
                raise RuntimeError(f"{out_csv} is being written by another benchmark (pid {text}; lock file {lock}): "
                                   "wait for it to end, or write to another --out") from None
            lock.unlink(missing_ok=True)   # left by a benchmark that was killed: take it over
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:    # alive, someone else's
        return True
    return True


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> (2, 8): worker 2 of 8 (numbered from 0)."""
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise ValueError(f"shard {text!r} must be I/N with 0 <= I < N, e.g. 0/4")
    return int(index), int(count)


def run_benchmark(grid: str | Path, out_csv: str | Path, profile: str | None = None, data_dir: str | Path = "data/benchmark",
                  checkpoint: str = "phantom_cpu", only: str | None = None, command: str = "",
                  progress: bool = True, workers: int = 1, shard: tuple[int, int] | None = None,
                  methods: Sequence[str] | None = None, ks: Sequence[int] | None = None,
                  tasks: Sequence[str] | None = None, largest_component: bool = True) -> pd.DataFrame:
    """Run every block of ``grid`` (or the one named ``only``) into ``out_csv``; returns the table.

    ``methods``, ``ks``, ``tasks``: run only these of the grid's methods (as the grid names them,
    e.g. ``spatial_adapter+penalty``), shots and tasks: to fill in, or re-run after a fix, part of a
    grid first (k = 1 of every method is what a CPU affords in an afternoon).

    ``workers > 1`` starts that many processes side by side (``fseft-lab benchmark --shard i/n``),
    each running every n-th of the runs left into its own shard file, and folds their rows into ``out_csv`` when
    they end: one GPU is far from busy with one cpu-profile adaptation. ``shard``: be one of them.
    Pre-processed volumes are kept in ``data_dir/cache`` and shared by all workers.
    ``largest_component``: the evaluation's post-processing (:func:`fseft_lab.experiments.run`);
    a table holds one kind, and one scored the other way is refused before any export.
    """
    from fseft_lab.models.zoo import ZOO, checkpoint_geometry, get_checkpoint, local_path, sha256, weights_sha256

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    blocks = read_grid(grid)
    if only is not None:
        blocks = [b for b in blocks if b.name == only]
        if not blocks:
            raise ValueError(f"no block named {only!r} in {grid}; its blocks: {[b.name for b in read_grid(grid)]}")
    for key, wanted in (("methods", methods), ("ks", ks), ("tasks", tasks)):
        blocks = narrow(blocks, key, wanted, f"the grid {grid}" + (f" (its block {only!r})" if only else ""))
    prof, out_csv, start = get_profile(profile), Path(out_csv), time.perf_counter()
    weights = local_path(get_checkpoint(checkpoint)) if checkpoint in ZOO else Path(checkpoint)
    spacing = checkpoint_geometry(checkpoint).spacing_mm          # the data is made at the model's own spacing
    if shard is not None:   # one of the workers of a benchmark that holds the lock
        datasets = [block_dataset(block, data_dir, prof, spacing) for block in blocks]
        return _run_blocks(blocks, datasets, checkpoint, out_csv, prof.name, data_dir, progress, shard,
                           largest_component)
    with writing_to(out_csv):
        checksum, weights_checksum = sha256(weights), weights_sha256(weights)
        fold_shards(out_csv)  # rows an interrupted parallel run left behind
        manifest = out_csv.with_suffix(".json")
        measured_with = json.loads(manifest.read_text()).get("weights_sha256") if manifest.is_file() else None
        if out_csv.is_file() and measured_with not in (None, weights_checksum):
            raise ValueError(f"{out_csv} holds results of the foundation model whose weights have sha256 "
                             f"{measured_with[:12]}..., but {checkpoint} has {weights_checksum[:12]}...: one table, "
                             "one model; write to another --out")
        if out_csv.is_file():
            check_post_processing(pd.read_csv(out_csv), largest_component, out_csv)
        datasets = [block_dataset(block, data_dir, prof, spacing) for block in blocks]  # exported once, before any worker starts
        finished = False
        try:
            if workers > 1:
                table = _run_workers(grid, out_csv, prof.name, data_dir, checkpoint, only, workers, methods, ks, tasks,
                                     largest_component)
            else:
                table = _run_blocks(blocks, datasets, checkpoint, out_csv, prof.name, data_dir, progress,
                                    largest_component=largest_component)
            finished = True
        finally:  # also when interrupted: the rows so far are kept, and the manifest says how far it got
            record_invocation(out_csv, grid, prof.name, checkpoint, checksum, weights_checksum, command=command,
                              workers=workers, wall_seconds=round(time.perf_counter() - start), finished=finished,
                              post_processing="largest component of one-piece structures" if largest_component else "none")
    return table


def narrow(blocks: list[Block], key: str, wanted: Sequence | None, where: str) -> list[Block]:
    """Keep only the ``wanted`` methods, ks or tasks of each block (all when ``wanted`` is empty), and drop
    blocks left with none; a value no block has is refused, since it is surely a typo."""
    if not wanted:
        return blocks
    unknown = sorted(set(wanted) - {v for b in blocks for v in getattr(b, key)})
    if unknown:
        raise ValueError(f"{key} {unknown} are not in {where}")
    kept = [replace(b, **{key: [v for v in getattr(b, key) if v in wanted]}) for b in blocks]
    return [b for b in kept if getattr(b, key)]


def record_invocation(out_csv: Path, grid, profile: str, checkpoint: str, checksum: str, weights_checksum: str,
                      **invocation) -> dict:
    """Write the manifest beside ``out_csv`` (atomically): what the table holds, and one entry per
    invocation that added to it (command, workers, wall time, software and hardware), since a
    resumed benchmark may have run on several machines. It names the model (its sha256) and the
    phantom generator's version (:data:`fseft_lab.data.phantom.GENERATOR_VERSION`) the rows come from."""
    from fseft_lab.data.phantom import GENERATOR_VERSION

    path = out_csv.with_suffix(".json")
    old = json.loads(path.read_text()) if path.is_file() else {}
    table = pd.read_csv(out_csv) if out_csv.is_file() else pd.DataFrame()
    manifest = {**old, "grid": str(grid), "grid_text": Path(grid).read_text(), "profile": profile, "checkpoint": checkpoint,
                "checkpoint_sha256": checksum, "weights_sha256": weights_checksum, "phantom_generator": GENERATOR_VERSION,
                "runs_in_grid": sum(b.runs for b in read_grid(grid)), "runs_done": len(done_runs(table)),
                "invocations": old.get("invocations", []) + [{**invocation, "runs_done_after": len(done_runs(table)),
                                                              "date": time.strftime("%Y-%m-%d %H:%M"), **environment()}]}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _run_blocks(blocks: list[Block], datasets: list[CaseFolder], checkpoint: str, out_csv: Path, profile: str,
                data_dir, progress: bool, shard: tuple[int, int] | None = None,
                largest_component: bool = True) -> pd.DataFrame:
    """Run the blocks' runs not yet done in this process: all of them, or, as worker i of n, every
    n-th one of the list that runs across all blocks and methods (so 3 runs left on 2 workers
    keep both busy)."""
    from fseft_lab.models.zoo import load_foundation

    target = out_csv if shard is None else shard_csv(out_csv, shard)
    done = set().union(*(done_runs(pd.read_csv(f)) for f in {out_csv, target} if f.is_file()))
    todo = [(block, ds, spec, task, k, seed)
            for block, ds in zip(blocks, datasets) for spec in block.methods
            for task, k, seed in itertools.product(block.tasks, block.ks, block.seeds)
            if grid_run_key(task, spec, block.decoder, k, seed, block.label()) not in done]
    index, count = shard or (0, 1)
    foundation, trunk_caches = load_foundation(checkpoint), {}   # frozen-trunk features, shared within a block
    for block, ds, spec, task, k, seed in progress_bar(todo[index::count], desc="benchmark", disable=not progress):
        method, ti = split_method(spec)
        run_grid(foundation, ds, target, [task], [method], [k], [seed],
                 RunOptions(decoder=block.decoder, profile=profile, config=block.config(), transductive=ti,
                            trunk_cache=trunk_caches.setdefault(block.name, {}),
                            progress=False, cache_dir=Path(data_dir) / "cache", largest_component=largest_component))
    return pd.read_csv(target) if target.is_file() else pd.DataFrame()


def grid_run_key(task: str, spec: str, decoder: str, k: int, seed: int, config: str = "default") -> tuple[str, ...]:
    """A grid entry's run key, e.g. ``spatial_adapter+penalty`` -> method ``spatial_adapter``,
    transductive ``penalty``; ``config``: its block's :meth:`Block.label`."""
    method, ti = split_method(spec)
    return run_key(task, method, decoder, ti.label if ti else "none", k, seed, config)


def _run_workers(grid, out_csv: Path, profile: str, data_dir, checkpoint: str, only: str | None, workers: int,
                 methods: Sequence[str] | None, ks: Sequence[int] | None, tasks: Sequence[str] | None,
                 largest_component: bool = True) -> pd.DataFrame:
    """Run ``workers`` shard processes to the end (each with its share of the CPU threads), then fold their rows."""
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    base = [sys.executable, "-m", "fseft_lab.cli", "benchmark", "--grid", str(grid), "--out", str(out_csv),
            "--profile", profile, "--data", str(data_dir), "--checkpoint", checkpoint,
            *(["--only", only] if only else []), *(["--methods", *methods] if methods else []),
            *(["--ks", *map(str, ks)] if ks else []), *(["--tasks", *tasks] if tasks else []),
            "--largest-component" if largest_component else "--no-largest-component"]
    procs = [subprocess.Popen(base + ["--shard", f"{i}/{workers}"], env={**os.environ, "OMP_NUM_THREADS": threads},
                              stdout=subprocess.DEVNULL) for i in range(workers)]
    try:
        failed = [i for i, p in enumerate(procs) if p.wait() != 0]
    finally:  # interrupted: stop the workers; their finished runs are kept in the shard files
        for p in procs:
            if p.poll() is None:
                p.kill()
        table = fold_shards(out_csv)
    if failed:
        raise RuntimeError(f"benchmark workers {failed} of {workers} failed (their messages are above); "
                           f"finished runs are in {out_csv}, run the same command again to resume")
    return table
