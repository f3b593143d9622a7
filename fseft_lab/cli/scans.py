"""``fseft-lab adapt`` and ``fseft-lab predict``: a user's own labelled scans, then new scans."""
from __future__ import annotations

from pathlib import Path

from fseft_lab.cli.common import CHECKPOINT_HELP, PROFILE_HELP, largest_component_switch, subcommand


def _plan(args, dataset) -> list[tuple[int, int, object]]:
    """Every run's (k, seed, test split), each split checked against the data before any training:
    a request the volumes cannot meet fails here, saying how many it needs and how many there are."""
    from fseft_lab.data.fewshot import leave_one_out
    from fseft_lab.experiments import split_for, task_cases

    usable = task_cases(dataset, args.task)
    if args.deploy:
        if args.k:
            raise ValueError(f"--deploy trains on every labelled volume that shows {args.task} ({len(usable)}): leave out --k")
        ks, tests = [len(usable)], [0]
    else:
        ks = args.k or [1]
        tests = ([list(t) for t in leave_one_out(usable)] if args.leave_one_out
                 else [args.test_cases or (args.num_test if args.num_test is not None else None)])
        if args.leave_one_out and max(ks) > len(usable) - 1:
            raise ValueError(f"--leave-one-out with k={max(ks)} needs {max(ks) + 1} labelled volumes that show "
                             f"{args.task} (1 test + {max(ks)} support); there are {len(usable)}")
    plan = [(k, seed, test) for k in ks for seed in args.seeds for test in tests]
    for k, seed, test in plan:
        split = split_for(dataset, args.task, k, seed, test, warn=False, whole=args.method != "zero_shot")
        if not split.test and not args.save_adapter:
            raise ValueError(f"k={k} leaves no test volume to score among the {len(usable)} that show {args.task}: "
                             "keep the adapter with --save-adapter (and --deploy), or lower --k")
    return plan


def _adapt(args) -> None:
    from fseft_lab.adapt import AdaptConfig
    from fseft_lab.anatomy import task_structures
    from fseft_lab.data.layouts import open_dataset
    from fseft_lab.experiments import RunOptions, append_rows, run
    from fseft_lab.methods import get_method
    from fseft_lab.models.zoo import load_foundation
    from fseft_lab.outputs import writable_file

    # the arguments and every output path, before any data is read
    args.task = ",".join(args.task)          # several structures: one multi-class task, named "liver,spleen"
    if args.deploy and not args.save_adapter:
        raise ValueError("--deploy scores nothing, so its adapter is all it makes: give --save-adapter FILE")
    if args.deploy and args.transductive:
        raise ValueError("--deploy has no test volumes for --transductive to use")
    if args.leave_one_out and args.save_adapter:
        raise ValueError("--leave-one-out trains one adapter per volume; to keep one, train on every volume with --deploy")
    if args.out is None and not args.deploy:
        raise ValueError("--out CSV is required: the rows of the scored test volumes go there (only --deploy scores nothing)")
    for path in (args.out, args.save_adapter):
        if path is not None:
            writable_file(path)
    get_method(args.method)
    dataset = open_dataset(args.data, args.template)
    if args.layout and dataset.layout != args.layout:
        raise ValueError(f"{args.data} is a {dataset.layout} folder, not --layout {args.layout}")
    task_structures(args.task, dataset.structures)
    plan = _plan(args, dataset)
    foundation = load_foundation(args.checkpoint, args.scheme)
    config = AdaptConfig(epochs=args.epochs, lr=args.lr)
    transductive = None
    if args.transductive:
        from fseft_lab.transductive import TransductiveConfig

        transductive = TransductiveConfig(args.transductive, margin=args.ti_margin, weight=args.ti_weight,
                                          protocol=args.ti_protocol)
    method_options = dict(_option(o) for o in args.option)
    scored = []
    for k, seed, test in plan:
        adapter = args.save_adapter
        if adapter and len(plan) > 1:
            adapter = adapter.with_name(f"{adapter.stem}_k{k}_seed{seed}{adapter.suffix}")
        options = RunOptions(decoder=args.decoder, profile=args.profile, config=config, largest_component=args.largest_component,
                             save_adapter_to=adapter, adapter_meta={"checkpoint": str(args.checkpoint), "scheme": args.scheme},
                             test_split=test, transductive=transductive, cache_dir=args.cache, spacing_mm=args.spacing,
                             patch_size=args.patch)
        rows, result = run(foundation, dataset, args.task, args.method, k, seed, options, **method_options)
        if len(rows):
            append_rows(rows, args.out)
            scored.append(rows)
            what = f"Dice {rows.dice.mean():.3f} on {rows.case.nunique()} test case(s) ({', '.join(map(str, rows.case.unique()[:3]))})"
        else:
            what = f"trained on {k} volume(s), none left to score"
        print(f"{args.method} {args.task} k={k} seed={seed}: {what} | {result.trainable:,} trainable | "
              f"{result.epochs_run} epochs, {result.train_seconds:.1f} s" + (f" | adapter {adapter}" if adapter else "")
              + (" (one per test volume: STEM_CASE)" if adapter and len(getattr(result, "per_volume", {})) > 1 else ""))
    if args.leave_one_out and scored:
        import pandas as pd

        per_case = pd.concat(scored).groupby("case").dice.mean()
        print(f"leave-one-out: Dice {per_case.mean():.3f} +- {per_case.std():.3f} over {len(per_case)} volumes")
    if scored:
        print(f"rows appended to {args.out}")
    if args.save_adapter:
        print(f"segment new scans with: fseft-lab predict --adapter {adapter} -i SCAN_OR_FOLDER -o OUT")


def _predict(args) -> None:
    from fseft_lab.methods import load_adapter_file
    from fseft_lab.models.zoo import load_foundation, read_state_dict
    from fseft_lab.outputs import writable_file
    from fseft_lab.predict import plan_outputs, segment_file
    from fseft_lab.progress import progress_bar

    jobs = plan_outputs(args.input, args.out)
    for _, out in jobs:          # every output, before the model is even loaded
        writable_file(out)
    saved = read_state_dict(args.adapter, "adapter file")   # one line for a file that is no checkpoint
    meta = saved.get("meta", {}) if isinstance(saved, dict) else {}
    checkpoint = args.checkpoint or meta.get("checkpoint", "phantom_cpu")
    profile = args.profile or meta.get("profile")
    model = load_adapter_file(load_foundation(checkpoint, args.scheme or meta.get("scheme")), args.adapter)
    for scan, out in progress_bar(jobs, desc="predict", unit="scan", disable=len(jobs) == 1):
        segment_file(model, scan, out, profile, args.largest_component)
    structures = [s for s in model.task_structures if s != "background"]
    where = jobs[0][1] if len(jobs) == 1 else f"{len(jobs)} label maps to {args.out}"
    print(f"wrote {where}: " + ", ".join(f"{i} = {s}" for i, s in enumerate(structures, start=1))
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



def add_adapt(sub) -> None:
    a = subcommand(sub, "adapt", "few-shot adaptation of the foundation model, then evaluation on test cases")
    a.add_argument("--data", type=Path, required=True, help="dataset folder (TotalSegmentator or MSD layout); required")
    a.add_argument("--layout", choices=["totalsegmentator", "msd"], default=None,
                   help="check that the folder has this layout (default: accept either)")
    a.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="keep pre-processed volumes in DIR, re-read when a source file changes (default: no cache)")
    a.add_argument("--template", default=None,
                   help="MSD labels instead of dataset.json's: a template name (e.g. flare22) or a JSON/YAML file of "
                        "structure: value (default: dataset.json's labels)")
    a.add_argument("--task", required=True, nargs="+", metavar="STRUCTURE",
                   help="a structure the dataset labels or the template names (binary); several names (liver spleen) "
                        "or all (every structure the dataset labels): one softmax task; or base_organs / heart / "
                        "lung_lobes / gluteus; required")
    a.add_argument("--method", required=True, help="adaptation method, see `fseft-lab methods`; required")
    a.add_argument("--k", type=int, nargs="+", default=None, help="support volumes (shots); several allowed (default: 1)")
    a.add_argument("--seeds", type=int, nargs="+", default=[0], help="few-shot draws; several allowed")
    a.add_argument("--decoder", choices=["frozen", "fine-tuned", "new"], default="frozen",
                   help="the SwinUNETR decoder: kept frozen, fine-tuned, or re-initialised and trained (new)")
    a.add_argument("--profile", default=None, help=PROFILE_HELP)
    a.add_argument("--epochs", type=int, default=None,
                   help="maximum epochs (default: the profile's; with --transductive, the reference's 100)")
    a.add_argument("--spacing", type=float, default=None, metavar="MM",
                   help="force another voxel size than the model was trained at (default: the model's; warns)")
    a.add_argument("--patch", type=int, default=None, metavar="N",
                   help="force another patch size than the model was trained at (default: the model's; warns)")
    a.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's)")
    largest_component_switch(a)
    a.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a method option, e.g. --option rank=8 (see the method's config); repeatable "
                        "(default: the method's defaults)")
    a.add_argument("--transductive", choices=["penalty", "barrier", "entropy"], default=None,
                   help="constrained transductive inference on the test volumes, frozen-trunk methods "
                        "(default: none)")
    a.add_argument("--ti-margin", type=float, default=0.3, help="size band half-width g (kidneys: 0.5)")
    a.add_argument("--ti-weight", type=float, default=0.1, help="lambda, the weight of the query term")
    a.add_argument("--ti-protocol", choices=["per_volume", "pooled"], default="per_volume",
                   help="per_volume: adapt once per test volume on the support plus that volume (the reference "
                        "code's); pooled: one adaptation for all test volumes, taking turns (default: per_volume)")
    a.add_argument("--checkpoint", default="phantom_cpu", help=CHECKPOINT_HELP)
    a.add_argument("--scheme", default=None, metavar="ENTRY",
                   help="the zoo entry whose key names a --checkpoint FILE follows, e.g. fseft or suprem_swinunetr "
                        "(default: detected from its keys)")
    a.add_argument("--out", type=Path, default=None, help="CSV to append result rows to (default: none; required unless --deploy)")
    a.add_argument("--save-adapter", type=Path, default=None,
                   help="write the trained adapter (a few KB) here (default: not saved)")
    split = a.add_argument_group("which labelled volumes are test cases (default: those the dataset marks, "
                                 "else the last 5 but at most half)").add_mutually_exclusive_group()
    split.add_argument("--test-cases", nargs="+", default=None, metavar="ID",
                       help="these cases are the test cases (default: see above)")
    split.add_argument("--num-test", type=int, default=None, metavar="N",
                       help="the last N cases are test cases; 0 scores nothing (default: see above)")
    split.add_argument("--leave-one-out", action="store_true",
                       help="score each volume in turn, adapting on the others: for a handful of scans")
    split.add_argument("--deploy", action="store_true",
                       help="adapt on every labelled volume, score none, save the adapter (--save-adapter) for predict")
    a.set_defaults(func=_adapt)


def add_predict(sub) -> None:
    pr = subcommand(sub, "predict", "segment CT scans with a saved adapter; each label map matches its scan's grid")
    pr.add_argument("--adapter", type=Path, required=True, help="adapter file written by `adapt --save-adapter`; required")
    pr.add_argument("-i", "--input", type=Path, required=True,
                    help="a CT volume in HU (.nii or .nii.gz), or a folder of them; required")
    pr.add_argument("-o", "--out", type=Path, required=True,
                    help="the label map to write (.nii.gz), or a folder: one label map per scan, named as the scan; required")
    pr.add_argument("--checkpoint", default=None, help="foundation model (default: the one the adapter was trained on)")
    pr.add_argument("--scheme", default=None, metavar="ENTRY",
                    help="the zoo entry whose key names --checkpoint FILE follows (default: the adapter's, else detected)")
    pr.add_argument("--profile", default=None, help="run profile (default: the one the adapter was trained with)")
    largest_component_switch(pr)
    pr.set_defaults(func=_predict)
