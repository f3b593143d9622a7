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

``method+mode`` runs the method with constrained transductive inference (``penalty``,
``barrier`` or ``entropy``). Every finished run is appended to the CSV at once, so an
interrupted benchmark resumes where it stopped (:func:`fseft_lab.experiments.run_grid`); a
manifest beside the CSV records the command, grid, checkpoint, software, hardware and wall time.

>>> run_benchmark("grids/fseft_phantom.toml", "results/benchmark_cpu.csv", profile="cpu")   # doctest: +SKIP
"""
from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fseft_lab.anatomy import task_structures
from fseft_lab.data.layouts import LAYOUTS, export_phantom
from fseft_lab.experiments import run_grid, write_manifest
from fseft_lab.methods import DECODER_OPTIONS, get_method
from fseft_lab.profiles import get_profile
from fseft_lab.transductive import MODES, TransductiveConfig

BLOCK_KEYS = {"name", "dataset", "tasks", "methods", "ks", "seeds", "decoder"}
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
    runs: int = field(init=False)

    def __post_init__(self):
        self.runs = len(self.tasks) * len(self.methods) * len(self.ks) * len(self.seeds)


def split_method(spec: str) -> tuple[str, TransductiveConfig | None]:
    """``"spatial_adapter+penalty"`` -> ("spatial_adapter", TransductiveConfig("penalty"))."""
    method, _, mode = spec.partition("+")
    return method, (TransductiveConfig(mode) if mode else None)


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
        missing = BLOCK_KEYS - {"decoder"} - set(raw)
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
            get_method(method)
            if mode and mode not in MODES:
                raise ValueError(f"{where}: method {spec!r}: transductive mode {mode!r} is not one of {MODES}")
        if raw.get("decoder", "frozen") not in DECODER_OPTIONS:
            raise ValueError(f"{where}: decoder {raw['decoder']!r} is not one of {DECODER_OPTIONS}")
        if not raw["ks"] or min(raw["ks"]) < 1 or not raw["seeds"]:
            raise ValueError(f"{where}: ks {raw['ks']} must be positive and seeds {raw['seeds']} non-empty")
        blocks.append(Block(**raw))
    return blocks


def run_benchmark(grid: str | Path, out_csv: str | Path, profile: str | None = None, data_dir: str | Path = "data/benchmark",
                  checkpoint: str = "phantom_cpu", only: str | None = None, command: str = "",
                  progress: bool = True) -> pd.DataFrame:
    """Run every block of ``grid`` (or the one named ``only``) into ``out_csv``; returns the table."""
    from fseft_lab.models.zoo import ZOO, get_checkpoint, load_foundation, local_path, sha256

    blocks = read_grid(grid)
    if only is not None:
        blocks = [b for b in blocks if b.name == only]
        if not blocks:
            raise ValueError(f"no block named {only!r} in {grid}; its blocks: {[b.name for b in read_grid(grid)]}")
    prof = get_profile(profile)
    foundation = load_foundation(checkpoint)
    start, table = time.perf_counter(), pd.DataFrame()
    for block in blocks:
        d = block.dataset
        name = f"{d['layout']}_{d.get('domain', 'default')}_seed{d.get('seed', 0)}_{prof.name}"
        ds = export_phantom(Path(data_dir) / name, d["layout"], cases=d.get("cases", prof.target_cases),
                            seed=d.get("seed", 0), domain=d.get("domain"), spacing=prof.spacing_mm,
                            template=d.get("template", "flare22"), num_test=d.get("num_test", 5), progress=False)
        trunk_cache: dict = {}
        if progress:
            print(f"{block.name}: {block.runs} runs on {ds.root}", flush=True)
        for spec in block.methods:
            method, ti = split_method(spec)
            table = run_grid(foundation, ds, out_csv, block.tasks, [method], block.ks, block.seeds,
                             decoder=block.decoder, profile=prof.name, transductive=ti, trunk_cache=trunk_cache,
                             progress=progress)
    weights = local_path(get_checkpoint(checkpoint)) if checkpoint in ZOO else Path(checkpoint)
    write_manifest(Path(out_csv).with_suffix(".json"), command=command, grid=str(grid), grid_text=Path(grid).read_text(),
                   profile=prof.name, checkpoint=checkpoint, checkpoint_sha256=sha256(weights),
                   wall_seconds=round(time.perf_counter() - start),
                   note="wall_seconds covers the last invocation only; finished runs were skipped")
    return table
