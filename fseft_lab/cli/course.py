"""The course's ``fseft-lab`` subcommands: course, quickstart, benchmark, methods, pretrain, phantom, zoo, notebooks."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from fseft_lab.cli.common import CHECKPOINT_HELP, PROFILE_HELP, largest_component_switch, subcommand
from fseft_lab.outputs import writable_folder


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


def _course(args) -> None:
    from fseft_lab.course_files import copy_course

    copied, kept = copy_course(args.dir, args.overwrite)
    print(f"{len(copied)} notebook(s) copied to {args.dir / 'notebooks'}"
          + (f"; kept {len(kept)} already there (--overwrite replaces them)" if kept else ""))
    print(f"the notebooks write their data to {args.dir / 'data'}; open the course with:\n  jupyter lab {args.dir}")


def _notebooks(args) -> None:
    from fseft_lab.notebooks import run

    for name, seconds in run(args.names, args.profile, args.out):
        print(f"{name}: {seconds:.0f} s")


#: One sentence per figure that quickstart prints, so the table reads without a textbook.
METRICS_EXPLAINED = (
    "Dice: overlap of prediction and truth, 0 to 1 (1 = perfect). HD95: the 95th-percentile distance (mm)\n"
    "between the predicted and the true surface, so islands of stray voxels far from the organ set it.\n"
    "NSD (in the CSV): the fraction of both surfaces within 3 mm of the other, 0 to 1.")


def _quickstart(args) -> None:
    """The main job: phantom target data, the shipped foundation model, three methods at k = 1."""
    import pandas as pd

    from fseft_lab.anatomy import task_structures
    from fseft_lab.data.layouts import export_phantom
    from fseft_lab.data.phantom import PHANTOM_STRUCTURES
    from fseft_lab.experiments import RunOptions, run, write_csv
    from fseft_lab.models.zoo import load_foundation
    from fseft_lab.profiles import get_profile

    # every argument is checked before the export, which takes a minute and tens of MB
    profile = get_profile(args.profile)
    structures, _ = task_structures(args.task)
    undrawn = [s for s in structures if s not in PHANTOM_STRUCTURES]
    if undrawn:
        raise ValueError(f"task {args.task!r}: the phantom never draws {undrawn}; pick a structure it draws, "
                         "e.g. liver, spleen, pancreas, kidney_left, heart_myocardium")
    out = writable_folder(Path(args.out))
    results = out / f"quickstart_{args.task}.csv"   # one file per task: another task never replaces these rows
    foundation = load_foundation(args.checkpoint)
    geometry = foundation.geometry
    print(f"profile {profile.name}, model {args.checkpoint}: {geometry}")
    ds = export_phantom(out / "totalseg_like", "totalsegmentator", cases=profile.target_cases, seed=args.seed,
                        spacing=geometry.spacing_mm, overwrite=args.overwrite)
    print(f"target dataset: {ds.root} ({len(ds.cases)} cases, {len(ds.test_ids)} test), task: {args.task}, k = 1")
    total = sum(p.numel() for p in foundation.parameters())
    tables, lines, trunk_cache = [], [], {}  # the three methods share the frozen trunk's test features
    for method in ("zero_shot", "linear_probe", "spatial_adapter"):
        table, result = run(foundation, ds, args.task, method, k=1, seed=args.seed,
                            options=RunOptions(profile=profile.name, trunk_cache=trunk_cache, largest_component=args.largest_component))
        tables.append(table)
        lines.append(f"{method:16s} {result.trainable:>10,d} {100 * result.trainable / total:>9.3f}% "
                     f"{table.dice.mean():>6.3f} +- {table.dice.std():.3f} {table.hd95.mean():>8.1f} "
                     f"{result.train_seconds:>8.1f}")
    replaced = results.is_file()
    write_csv(pd.concat(tables, ignore_index=True), results)
    print(f"\n{'method':16s} {'trainable':>10s} {'of model':>10s} {'Dice (test cases)':>17s} {'HD95 mm':>8s} {'train s':>8s}")
    print("\n".join(lines))
    print(f"\n{METRICS_EXPLAINED}")
    cleaned = sorted(set(pd.concat(tables).query("post_processing != 'none'").structure))
    if cleaned:
        post = (f"{', '.join(cleaned)} kept to the largest connected component (anatomically one piece); "
                "--no-largest-component scores the raw masks")
    else:
        post = "none, raw masks" + (f" ({', '.join(structures)}: may be several pieces)" if args.largest_component else "")
    print(f"Post-processing: {post}; the CSV's post_processing column says so per row.")
    print(f"per-case rows: {results}" + (" (replaced the previous run of this task)" if replaced else "")
          + "; the course continues in notebooks/02_zero_shot_linear_probe.ipynb")



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
                          tasks=args.tasks, largest_component=args.largest_component)
    if shard:
        return
    print(summary(table, by=("task", "method", "transductive", "k")).round(3).to_string())
    print(f"rows in {args.out}, manifest {args.out.with_suffix('.json')}")



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
        for label, overrides in spec.variants.items():  # the course's earlier version, where it differs from the reference
            n = trainable_parameters(build(foundation, name, ["liver"], **overrides))
            option = " ".join(f"--option {k}={v}" for k, v in overrides.items())
            print(f"{'':16s} {n:>11,d} {100 * n / total:>8.3f}% {'':>7s}    {option}: {label}")


def _pretrain(args) -> None:
    from fseft_lab.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(out=args.out, profile=args.profile or "cpu", steps=args.steps, crops_per_step=args.crops,
                         lr=args.lr, warmup_steps=args.warmup, cases_per_source=args.cases, data_dir=args.data_dir,
                         seed=args.seed, checkpoint_every=args.checkpoint_every, resume=args.resume, init=args.init,
                         balance=args.balance, contrast_aug=args.contrast_aug, phase_aug=args.phase_aug,
                         negatives=args.negatives, nnunet_aug=args.nnunet_aug, crop_shift=args.crop_shift,
                         hard_negatives=args.hard_negatives, workers=args.workers)
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
        for key in ("description", "url", "filename", "sha256", "feature_size", "container", "strip", "renames", "keep", "may_miss",
                    "legacy_merging", "licence", "note"):
            print(f"{key:15s} {getattr(entry, key)}")
        print(f"{'head rows':15s} {sum(c is not None for c in entry.classes)} ({'plain head' if entry.classes else 'none: new head'})")
        print(f"{'local file':15s} {zoo.local_path(entry)}")
    else:
        print(f"saved {zoo.download(args.name)}")


def add_course(sub) -> None:
    c = subcommand(sub, "course", "copy the course notebooks into a working folder of your own, where you run them")
    c.add_argument("dir", type=Path, help="working folder: DIR/notebooks (the notebooks) and DIR/data (what they write)")
    c.add_argument("--overwrite", action="store_true", help="replace notebooks already in DIR (your edits are lost)")
    c.set_defaults(func=_course)


def add_quickstart(sub) -> None:
    q = subcommand(sub, "quickstart", "run the main job on phantom data: three methods at k = 1 on one organ")
    q.add_argument("--profile", default=None, help=PROFILE_HELP)
    q.add_argument("--out", default="data/quickstart", help="working folder: the phantom dataset and quickstart_TASK.csv")
    q.add_argument("--seed", type=int, default=0, help="phantom population and few-shot draw")
    q.add_argument("--overwrite", action="store_true", help="replace a different phantom dataset in the working folder")
    q.add_argument("--task", default="liver", help="structure to adapt to (e.g. spleen, pancreas, kidney_left)")
    q.add_argument("--checkpoint", default="phantom_cpu", help=CHECKPOINT_HELP)
    largest_component_switch(q)
    q.set_defaults(func=_quickstart)


def add_benchmark(sub) -> None:
    b = subcommand(sub, "benchmark", "run a grid file of experiments into one CSV (resumable)")
    b.add_argument("--grid", type=Path, default=Path("grids/fseft_phantom.toml"), help="TOML grid file")
    b.add_argument("--out", type=Path, default=Path("results/benchmark.csv"), help="CSV to append rows to")
    b.add_argument("--profile", default=None, help=PROFILE_HELP)
    b.add_argument("--data", type=Path, default=Path("data/benchmark"), help="where the phantom targets are exported")
    b.add_argument("--checkpoint", default="phantom_cpu", help=CHECKPOINT_HELP)
    b.add_argument("--only", default=None, help="run only the block with this name (default: every block)")
    b.add_argument("--list", action="store_true", help="list the grid's blocks and run counts, run nothing")
    b.add_argument("--workers", type=int, default=1, help="processes side by side (e.g. 8 on one GPU); rows are folded into --out")
    b.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="run only these of the grid's methods, e.g. spatial_adapter+penalty (default: all)")
    b.add_argument("--ks", nargs="+", type=int, default=None, metavar="K",
                   help="run only these of the grid's shots, e.g. 1 (default: all)")
    b.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                   help="run only these of the grid's tasks, e.g. heart (default: all)")
    b.add_argument("--shard", default=None,
                   help="I/N: run only worker I's share of N, what --workers starts (default: all runs)")
    largest_component_switch(b)
    b.set_defaults(func=_benchmark)


def add_tools(sub) -> None:
    m = subcommand(sub, "methods", "list adaptation methods with their trainable parameters")
    m.add_argument("--profile", default=None, help=PROFILE_HELP + "; paper gives the paper's counts")
    m.set_defaults(func=_methods)

    p = subcommand(sub, "pretrain", "partial-label pre-training of the foundation model (torchrun for several GPUs)")
    p.add_argument("out", type=Path, help="run folder (checkpoint.pt, model.pt, log.csv)")
    p.add_argument("--profile", default=None, help="cpu, gpu or paper (default: cpu)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the profile's)")
    p.add_argument("--crops", type=int, default=1, help="crops per step and process")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    p.add_argument("--cases", type=int, default=None, help="phantom volumes per source dataset (default: the profile's)")
    p.add_argument("--data-dir", type=Path, default=Path("data/pretrain"), help="where the source phantoms are exported")
    p.add_argument("--seed", type=int, default=0, help="phantom population and crop order")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (for --resume)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--init", type=Path, default=None, help="start from these weights (default: random)")
    p.add_argument("--balance", choices=["sources", "structures"], default="sources",
                   help="sample source datasets uniformly (the paper) or labelled structures uniformly")
    p.add_argument("--contrast-aug", type=float, default=0.0, metavar="P",
                   help="probability per crop of shifting each labelled structure's intensity, as in another contrast phase")
    p.add_argument("--phase-aug", type=float, default=0.0, metavar="P",
                   help="probability per crop of pulling all its enhanced tissue toward plain CT's values, organs and neighbours")
    p.add_argument("--negatives", type=float, default=0.2, metavar="SHARE",
                   help="share of crops centred off the labelled organs (0.2: the paper's 4:1; nnU-Net: 0.67)")
    p.add_argument("--nnunet-aug", type=float, default=0.0, metavar="P",
                   help="probability per crop of nnU-Net's default augmentation: scaling, rotation, noise, blur, "
                        "brightness, contrast, low resolution, gamma (no mirroring)")
    p.add_argument("--crop-shift", type=float, default=0.0, metavar="FRACTION",
                   help="largest offset of a crop from the voxel it is drawn about, per axis, as a fraction of the "
                        "patch (0: centred, the paper; 0.375: up to 24 of 64 voxels), as sliding windows place organs")
    p.add_argument("--hard-negatives", type=float, default=0.0, metavar="SHARE",
                   help="share of the --negatives crops centred on the scan's other labelled structures instead of "
                        "unlabelled voxels (0: the paper), so that an organ's channel learns its look-alike neighbours")
    p.add_argument("--workers", type=int, default=0,
                   help="background processes that export sources and draw crops (use several on a GPU; same result)")
    p.set_defaults(func=_pretrain)

    phantom = subcommand(sub, "phantom", "procedural CT phantom datasets").add_subparsers(dest="action", required=True)
    e = subcommand(phantom, "export", "write a phantom dataset in a real dataset's layout")
    e.add_argument("out", type=Path, help="folder to write (written aside, then renamed: never half a dataset)")
    e.add_argument("--layout", choices=["totalsegmentator", "msd"], default="totalsegmentator",
                   help="one mask file per structure (totalsegmentator) or one label map per case (msd)")
    e.add_argument("--cases", type=int, default=10, help="phantom subjects (volumes)")
    e.add_argument("--seed", type=int, default=0, help="population seed: subject i of a seed is the same person in every domain")
    e.add_argument("--domain", default=None,
                   help="acquisition domain, see `fseft-lab phantom domains` "
                        "(default: totalseg_like for totalsegmentator, flare_like for msd)")
    e.add_argument("--spacing", type=float, default=None, help="isotropic voxel size in mm (default: the domain's)")
    e.add_argument("--template", default="flare22", help="label template of an msd export (e.g. flare22, amos, btcv)")
    e.add_argument("--num-test", type=int, default=None,
                   help="the last N cases are test cases (default: 5, at most half of --cases)")
    e.add_argument("--overwrite", action="store_true", help="replace a different dataset in OUT")
    e.set_defaults(func=_export)
    subcommand(phantom, "domains", "list acquisition domains").set_defaults(func=_domains)

    z = subcommand(sub, "zoo", "foundation-model checkpoints").add_subparsers(dest="action", required=True)
    subcommand(z, "list", "list checkpoints").set_defaults(func=_zoo)
    for action, what in (("info", "source, key remapping and licence of a checkpoint"),
                         ("download", "download a checkpoint into the cache (progress bar, checksum)")):
        a = subcommand(z, action, what)
        a.add_argument("name", help="checkpoint name, see `fseft-lab zoo list`")
        a.set_defaults(func=_zoo)

    nb = subcommand(sub, "notebooks", "course notebooks").add_subparsers(dest="action", required=True)
    r = subcommand(nb, "run", "execute notebooks headless with papermill")
    r.add_argument("names", nargs="*", help="notebook names or prefixes (default: all)")
    r.add_argument("--profile", default=None, help=PROFILE_HELP)
    r.add_argument("--out", type=Path, default=None, help="write executed copies here (default: in place)")
    r.set_defaults(func=_notebooks)
