"""``fseft-lab``: the course's work from a terminal.

    fseft-lab quickstart [--profile P]                 the main job on phantom data
    fseft-lab adapt --data DIR --task T --method M --k K --seeds S --out CSV [--transductive penalty]
                                                       few-shot adaptation
    fseft-lab benchmark --grid grids/fseft_phantom.toml --out results/benchmark.csv   the paper's grid
    fseft-lab predict --adapter A.pt --input CT.nii.gz --out SEG.nii.gz   segment a CT with an adapter
    fseft-lab methods [--profile P]                    adaptation methods and their trainable parameters
    fseft-lab pretrain OUT [--profile P] [--steps N] [--resume]   partial-label pre-training
    fseft-lab phantom export OUT --layout totalsegmentator --cases 10 --seed 0 [--domain D] [--spacing MM]
    fseft-lab phantom domains                          list acquisition domains
    fseft-lab notebooks run [--profile P] [NAMES...]   execute notebooks headless (papermill)
    fseft-lab zoo list | info NAME | download NAME     foundation-model checkpoints
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path


def _disk_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _export(args) -> None:
    from fseft_lab.data.layouts import export_phantom

    start = time.perf_counter()
    ds = export_phantom(args.out, args.layout, args.cases, args.seed, args.domain, args.spacing,
                        args.template, args.num_test, args.overwrite)
    first = ds.load(ds.cases[0])
    spacing = [round(float(s), 2) for s in first["image"].pixdim]
    print(f"wrote {len(ds.cases)} cases ({len(ds.test_ids)} test) to {ds.root} in {ds.layout} layout "
          f"[{time.perf_counter() - start:.1f} s, {_disk_size(ds.root) / 1e6:.1f} MB]")
    print(f"  image shape {tuple(first['image'].shape[1:])} voxels, spacing {spacing} mm")
    print(f"  {len(ds.structures)} structures: {', '.join(ds.structures)}")


def _domains(args) -> None:
    from fseft_lab.data.phantom import DOMAINS

    print(f"{'domain':15s} {'phase':9s} {'noise HU':>8s} {'blur mm':>7s} {'population':10s} {'slices mm':14s} fields of view")
    for d in DOMAINS.values():
        fovs = ", ".join(f"{name} {weight:.0%}" for name, weight in d.fovs)
        slices = "-".join(f"{s:g}" for s in (min(d.slice_mm), max(d.slice_mm)))
        print(f"{d.name:15s} {d.phase:9s} {d.noise_hu:8.0f} {d.blur_mm:7.1f} {d.population:10s} {slices:14s} {fovs}")


def _notebooks(args) -> None:
    from fseft_lab.notebooks import run

    for name, seconds in run(args.names, args.profile, args.out):
        print(f"{name}: {seconds:.0f} s")


def _quickstart(args) -> None:
    """The main job: phantom target data, the shipped foundation model, three methods at k = 1."""
    from fseft_lab.data.layouts import export_phantom
    from fseft_lab.experiments import run, write_csv
    from fseft_lab.models.zoo import load_foundation
    from fseft_lab.profiles import get_profile

    import pandas as pd

    profile = get_profile(args.profile)
    out = Path(args.out)
    foundation = load_foundation(args.checkpoint)
    geometry = foundation.geometry
    print(f"profile {profile.name}, model {args.checkpoint}: {geometry}")
    ds = export_phantom(out / "totalseg_like", "totalsegmentator", cases=profile.target_cases, seed=args.seed,
                        spacing=geometry.spacing_mm, overwrite=args.overwrite)
    print(f"target dataset: {ds.root} ({len(ds.cases)} cases, {len(ds.test_ids)} test), task: {args.task}, k = 1")
    total = sum(p.numel() for p in foundation.parameters())
    tables, lines, trunk_cache = [], [], {}  # the three methods share the frozen trunk's test features
    for method in ("zero_shot", "linear_probe", "spatial_adapter"):
        table, result = run(foundation, ds, args.task, method, k=1, seed=args.seed, profile=profile.name,
                            trunk_cache=trunk_cache)
        tables.append(table)
        lines.append(f"{method:16s} {result.trainable:>10,d} {100 * result.trainable / total:>9.3f}% "
                     f"{table.dice.mean():>6.3f} +- {table.dice.std():.3f} {result.train_seconds:>8.1f}")
    write_csv(pd.concat(tables, ignore_index=True), out / "quickstart.csv")
    print(f"\n{'method':16s} {'trainable':>10s} {'of model':>10s} {'Dice (test cases)':>17s} {'train s':>8s}")
    print("\n".join(lines))
    print(f"\nper-case rows: {out / 'quickstart.csv'}; the course continues in notebooks/02_zero_shot_linear_probe.ipynb")


def _adapt(args) -> None:
    from fseft_lab.adapt import AdaptConfig
    from fseft_lab.data.layouts import open_dataset
    from fseft_lab.experiments import append_rows, run
    from fseft_lab.models.zoo import load_foundation

    dataset = open_dataset(args.data, args.template)
    if args.layout and dataset.layout != args.layout:
        raise ValueError(f"{args.data} is a {dataset.layout} folder, not --layout {args.layout}")
    foundation = load_foundation(args.checkpoint)
    config = AdaptConfig(epochs=args.epochs, lr=args.lr)
    transductive = None
    if args.transductive:
        from fseft_lab.transductive import TransductiveConfig

        transductive = TransductiveConfig(args.transductive, margin=args.ti_margin, weight=args.ti_weight)
    options = dict(_option(o) for o in args.option)
    for k in args.k:
        for seed in args.seeds:
            adapter = args.save_adapter
            if adapter and len(args.k) * len(args.seeds) > 1:
                adapter = adapter.with_name(f"{adapter.stem}_k{k}_seed{seed}{adapter.suffix}")
            rows, result = run(foundation, dataset, args.task, args.method, k, seed, decoder=args.decoder,
                               profile=args.profile, config=config, largest_component=args.largest_component,
                               save_adapter_to=adapter, transductive=transductive,
                               adapter_meta={"checkpoint": str(args.checkpoint)}, cache_dir=args.cache,
                               spacing_mm=args.spacing, patch_size=args.patch, **options)
            append_rows(rows, args.out)
            print(f"{args.method} {args.task} k={k} seed={seed}: Dice {rows.dice.mean():.3f} on {rows.case.nunique()} test "
                  f"cases | {result.trainable:,} trainable | {result.epochs_run} epochs, {result.train_seconds:.1f} s"
                  + (f" | adapter {adapter}" if adapter else ""))
    print(f"rows appended to {args.out}")


def _benchmark(args) -> None:
    from fseft_lab.benchmark import parse_shard, read_grid, run_benchmark
    from fseft_lab.experiments import summary

    if args.list:
        for block in read_grid(args.grid):
            print(f"{block.name}: {block.runs} runs ({len(block.tasks)} tasks x {len(block.methods)} methods x "
                  f"k {block.ks} x {len(block.seeds)} seeds, decoder {block.decoder})")
        return
    shard = parse_shard(args.shard) if args.shard else None
    table = run_benchmark(args.grid, args.out, args.profile, args.data, args.checkpoint, args.only,
                          command=args.command_line, workers=args.workers, shard=shard, methods=args.methods, ks=args.ks,
                          tasks=args.tasks)
    if shard:
        return
    print(summary(table, by=("task", "method", "transductive", "k")).round(3).to_string())
    print(f"rows in {args.out}, manifest {args.out.with_suffix('.json')}")


def _predict(args) -> None:
    import torch

    from fseft_lab.methods import load_adapter_file
    from fseft_lab.models.zoo import load_foundation
    from fseft_lab.predict import segment_file

    try:
        meta = torch.load(args.adapter, map_location="cpu", weights_only=True).get("meta", {})
    except Exception as err:
        raise ValueError(f"cannot read adapter file {args.adapter}: {err}") from err
    checkpoint = args.checkpoint or meta.get("checkpoint", "phantom_cpu")
    profile = args.profile or meta.get("profile")
    model = load_adapter_file(load_foundation(checkpoint), args.adapter)
    out = segment_file(model, args.input, args.out, profile, args.largest_component)
    structures = [s for s in model.task_structures if s != "background"]
    print(f"wrote {out}: " + ", ".join(f"{i} = {s}" for i, s in enumerate(structures, start=1))
          + f" (model {checkpoint} + {model.method} adapter, profile {profile or 'auto'})")


def _option(text: str) -> tuple[str, object]:
    """``rank=8`` -> ("rank", 8): a method option from the command line (numbers, booleans or text)."""
    import ast

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--option {text!r}: write NAME=VALUE, e.g. --option rank=8")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _methods(args) -> None:
    from fseft_lab.methods import REGISTRY, build, method_names, trainable_parameters
    from fseft_lab.models.foundation import FoundationModel
    from fseft_lab.profiles import get_profile

    profile = get_profile(args.profile)
    foundation = FoundationModel(profile.geometry.feature_size)
    total = sum(p.numel() for p in foundation.parameters())
    print(f"profile {profile.name}: SwinUNETR feature size {profile.geometry.feature_size}, {total:,} parameters, binary task")
    print(f"{'method':16s} {'trainable':>11s} {'of model':>9s} {'lr':>7s}  what it trains")
    for name in method_names():
        spec = REGISTRY[name]
        n = trainable_parameters(build(foundation, name, ["liver"]))
        doc = (sys.modules[spec.apply.__module__].__doc__ or "").strip().splitlines()[0]
        lr = f"{spec.lr:.0e}" if spec.lr else "-"
        print(f"{name:16s} {n:>11,d} {100 * n / total:>8.3f}% {lr:>7s}  {doc}")


def _pretrain(args) -> None:
    from fseft_lab.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(out=args.out, profile=args.profile or "cpu", steps=args.steps, crops_per_step=args.crops,
                         lr=args.lr, warmup_steps=args.warmup, cases_per_source=args.cases, data_dir=args.data_dir,
                         seed=args.seed, checkpoint_every=args.checkpoint_every, resume=args.resume, init=args.init,
                         balance=args.balance, contrast_aug=args.contrast_aug, workers=args.workers)
    pretrain(cfg)
    print(f"weights: {Path(args.out) / 'model.pt'} | log: {Path(args.out) / 'log.csv'}")


def _zoo(args) -> None:
    from fseft_lab.models import zoo

    if args.action == "list":
        for entry in zoo.ZOO.values():
            state = "available" if zoo.local_path(entry).is_file() else ("download by hand" if entry.manual else "not downloaded")
            print(f"{entry.name:18s} {state:17s} {entry.description}")
    elif args.action == "info":
        entry = zoo.get_checkpoint(args.name)
        for key in ("description", "url", "filename", "sha256", "feature_size", "container", "strip", "renames", "keep",
                    "legacy_merging", "licence", "note"):
            print(f"{key:15s} {getattr(entry, key)}")
        print(f"{'head rows':15s} {sum(c is not None for c in entry.classes)} ({'plain head' if entry.classes else 'none: new head'})")
        print(f"{'local file':15s} {zoo.local_path(entry)}")
    else:
        print(f"saved {zoo.download(args.name)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fseft-lab", description="Few-shot efficient fine-tuning of a CT foundation model.")
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quickstart", help="run the main job on phantom data")
    q.add_argument("--profile", default=None, help="cpu, gpu, paper or auto (default: $FSEFT_PROFILE, else auto)")
    q.add_argument("--out", default="data/quickstart", help="working folder (default: data/quickstart)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--overwrite", action="store_true")
    q.add_argument("--task", default="liver", help="base organ to adapt (default: liver)")
    q.add_argument("--checkpoint", default="phantom_cpu", help="zoo name or weights file (default: phantom_cpu)")
    q.set_defaults(func=_quickstart)

    a = sub.add_parser("adapt", help="few-shot adaptation of the foundation model, then evaluation on test cases")
    a.add_argument("--data", type=Path, required=True, help="dataset folder (TotalSegmentator or MSD layout)")
    a.add_argument("--layout", choices=["totalsegmentator", "msd"], default=None, help="check the folder's layout")
    a.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="keep pre-processed volumes in DIR (re-read when a source file changes)")
    a.add_argument("--template", default=None,
                   help="MSD labels instead of dataset.json's: a template name (e.g. flare22) or a JSON/YAML file of structure: value")
    a.add_argument("--task", required=True, help="a structure (binary) or base_organs / heart / lung_lobes / gluteus")
    a.add_argument("--method", required=True, help="see `fseft-lab methods`")
    a.add_argument("--k", type=int, nargs="+", default=[1], help="support volumes (shots); several allowed")
    a.add_argument("--seeds", type=int, nargs="+", default=[0], help="few-shot draws")
    a.add_argument("--decoder", choices=["frozen", "fine-tuned", "new"], default="frozen")
    a.add_argument("--profile", default=None, help="cpu, gpu, paper or auto")
    a.add_argument("--epochs", type=int, default=None, help="maximum epochs (default: the profile's)")
    a.add_argument("--spacing", type=float, default=None, metavar="MM",
                   help="force another voxel size than the model was trained at (default: the model's; warns)")
    a.add_argument("--patch", type=int, default=None, metavar="N",
                   help="force another patch size than the model was trained at (default: the model's; warns)")
    a.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's)")
    a.add_argument("--largest-component", action="store_true", help="keep each structure's largest component")
    a.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a method option, e.g. --option rank=8 (see the method's config); repeatable")
    a.add_argument("--transductive", choices=["penalty", "barrier", "entropy"], default=None,
                   help="constrained transductive inference on the test volumes (frozen-trunk methods)")
    a.add_argument("--ti-margin", type=float, default=0.3, help="size band half-width g (kidneys: 0.5)")
    a.add_argument("--ti-weight", type=float, default=0.1, help="lambda, the weight of the query term")
    a.add_argument("--checkpoint", default="phantom_cpu", help="zoo name or weights file (default: phantom_cpu)")
    a.add_argument("--out", type=Path, required=True, help="CSV to append result rows to")
    a.add_argument("--save-adapter", type=Path, default=None, help="write the trained adapter (a few KB) here")
    a.set_defaults(func=_adapt)

    b = sub.add_parser("benchmark", help="run a grid file of experiments into one CSV (resumable)")
    b.add_argument("--grid", type=Path, default=Path("grids/fseft_phantom.toml"), help="TOML grid file")
    b.add_argument("--out", type=Path, default=Path("results/benchmark.csv"), help="CSV to append rows to")
    b.add_argument("--profile", default=None, help="cpu, gpu, paper or auto")
    b.add_argument("--data", type=Path, default=Path("data/benchmark"), help="where the phantom targets are exported")
    b.add_argument("--checkpoint", default="phantom_cpu", help="zoo name or weights file (default: phantom_cpu)")
    b.add_argument("--only", default=None, help="run only the block with this name")
    b.add_argument("--list", action="store_true", help="list the grid's blocks and run counts, run nothing")
    b.add_argument("--workers", type=int, default=1, help="processes side by side (e.g. 8 on one GPU); rows are folded into --out")
    b.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="run only these of the grid's methods (e.g. spatial_adapter+penalty)")
    b.add_argument("--ks", nargs="+", type=int, default=None, metavar="K", help="run only these of the grid's shots (e.g. 1)")
    b.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="run only these of the grid's tasks (e.g. heart)")
    b.add_argument("--shard", default=None, help="I/N: run only worker I's share of N (what --workers starts)")
    b.set_defaults(func=_benchmark)

    pr = sub.add_parser("predict", help="segment a CT file with a saved adapter; the label map matches the input's grid")
    pr.add_argument("--adapter", type=Path, required=True, help="adapter file written by `adapt --save-adapter`")
    pr.add_argument("--input", type=Path, required=True, help="CT volume in HU (.nii or .nii.gz)")
    pr.add_argument("--out", type=Path, required=True, help="label map to write (.nii.gz)")
    pr.add_argument("--checkpoint", default=None, help="foundation model (default: the one the adapter was trained on)")
    pr.add_argument("--profile", default=None, help="default: the profile the adapter was trained with")
    pr.add_argument("--largest-component", action="store_true", help="keep each structure's largest component")
    pr.set_defaults(func=_predict)

    m = sub.add_parser("methods", help="list adaptation methods with their trainable parameters")
    m.add_argument("--profile", default=None, help="cpu, gpu, paper or auto (paper: the paper's counts)")
    m.set_defaults(func=_methods)

    p = sub.add_parser("pretrain", help="partial-label pre-training of the foundation model (torchrun for several GPUs)")
    p.add_argument("out", type=Path, help="run folder (checkpoint.pt, model.pt, log.csv)")
    p.add_argument("--profile", default=None, help="cpu, gpu or paper (default cpu)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the profile's)")
    p.add_argument("--crops", type=int, default=1, help="crops per step and process")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    p.add_argument("--cases", type=int, default=None, help="phantom volumes per source dataset")
    p.add_argument("--data-dir", type=Path, default=Path("data/pretrain"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--init", type=Path, default=None, help="start from these weights")
    p.add_argument("--balance", choices=["sources", "structures"], default="sources",
                   help="sample source datasets uniformly (the paper) or labelled structures uniformly")
    p.add_argument("--contrast-aug", type=float, default=0.0, metavar="P",
                   help="probability per crop of shifting each labelled structure's intensity, as in another contrast phase")
    p.add_argument("--workers", type=int, default=0,
                   help="background processes that export sources and draw crops (use several on a GPU; same result)")
    p.set_defaults(func=_pretrain)

    phantom = sub.add_parser("phantom", help="procedural CT phantom datasets").add_subparsers(dest="action", required=True)
    e = phantom.add_parser("export", help="write a phantom dataset in a real dataset's layout")
    e.add_argument("out", type=Path)
    e.add_argument("--layout", choices=["totalsegmentator", "msd"], default="totalsegmentator")
    e.add_argument("--cases", type=int, default=10)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--domain", default=None, help="acquisition domain (see `fseft-lab phantom domains`)")
    e.add_argument("--spacing", type=float, default=None, help="isotropic voxel size in mm (default: the domain's)")
    e.add_argument("--template", default="flare22", help="label template of an msd export")
    e.add_argument("--num-test", type=int, default=5, help="last N cases are test cases")
    e.add_argument("--overwrite", action="store_true", help="replace a different dataset in OUT")
    e.set_defaults(func=_export)
    phantom.add_parser("domains", help="list acquisition domains").set_defaults(func=_domains)

    z = sub.add_parser("zoo", help="foundation-model checkpoints").add_subparsers(dest="action", required=True)
    z.add_parser("list", help="list checkpoints").set_defaults(func=_zoo)
    for action in ("info", "download"):
        a = z.add_parser(action, help=f"{action} a checkpoint")
        a.add_argument("name")
        a.set_defaults(func=_zoo)

    nb = sub.add_parser("notebooks", help="course notebooks").add_subparsers(dest="action", required=True)
    r = nb.add_parser("run", help="execute notebooks headless with papermill")
    r.add_argument("names", nargs="*", help="notebook names or prefixes (default: all)")
    r.add_argument("--profile", default=None)
    r.add_argument("--out", type=Path, default=None, help="write executed copies here instead of in place")
    r.set_defaults(func=_notebooks)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _restart_with_malloc_settings() -> None:
    """Start this command again, once, with glibc keeping freed memory in the process
    (``profiles.MALLOC_ENV``: about half the time of a training step on a Linux CPU). glibc reads
    the settings only when a process starts, so they cannot be set from here. A value the user set
    wins: ``MALLOC_MMAP_THRESHOLD_=131072`` (glibc's default) keeps its usual behaviour."""
    from fseft_lab.profiles import MALLOC_ENV

    if sys.platform.startswith("linux") and sys.executable and not any(k in os.environ for k in MALLOC_ENV):
        os.execve(sys.executable, [sys.executable, "-m", "fseft_lab.cli", *sys.argv[1:]], {**os.environ, **MALLOC_ENV})


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the ``fseft-lab`` command itself, not a call from Python
        _restart_with_malloc_settings()
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["fseft-lab", *(sys.argv[1:] if argv is None else argv)])  # for manifests
    # SIGTERM (kill, a scheduler's time limit) stops long work as gracefully as Ctrl-C, and so does
    # SIGINT in a background job (where the shell ignores it): finished runs and manifests are kept
    graceful = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)} if graceful else {}
    try:
        args.func(args)
    except (ValueError, OSError, KeyError, RuntimeError, FloatingPointError) as err:
        print(f"fseft-lab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fseft-lab: interrupted", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
