"""Pre-train for as many steps as fit in a time budget (for a GPU machine booked for a fixed time).

    python tools/pretrain_in_budget.py runs/NAME --budget 420 -- --profile cpu --crops 4 ...

A short probe run measures seconds per step and the start-up cost, then ``fseft-lab pretrain``
runs once with the step count that fits (the cosine schedule needs it up front). Both are the
real command line, run as is; the main one is printed and saved in ``RUN/command.txt`` for the
manifest. Arguments after ``--`` go to both runs unchanged.
"""
import argparse
import csv
import shlex
import subprocess
import sys
import time
from pathlib import Path


def pretrain(out: Path, steps: int, args: list[str]) -> list[str]:
    command = ["fseft-lab", "pretrain", str(out), "--steps", str(steps), *args]
    subprocess.run([sys.executable, "-m", "fseft_lab.cli", *command[1:]], check=True)
    return command


def seconds_per_step(log: Path) -> float:
    """From the probe's log, leaving out its first quarter (the first steps include warm-up)."""
    seconds = [float(row["seconds"]) for row in csv.DictReader(open(log))]
    skip = max(1, len(seconds) // 4)
    return (seconds[-1] - seconds[skip - 1]) / (len(seconds) - skip)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--budget", type=float, required=True, help="seconds for the probe and the run together")
    parser.add_argument("--probe-steps", type=int, default=40)
    parser.add_argument("--margin", type=float, default=0.9, help="fraction of the estimate to run")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, rest = parser.parse_args(argv[:cut]), argv[cut + 1:]  # after --: fseft-lab pretrain options
    if "--steps" in rest or "--resume" in rest:
        raise SystemExit("--steps and --resume are decided here; leave them out of the pretrain options")
    start = time.perf_counter()
    probe = args.run.with_name(args.run.name + "_probe")
    pretrain(probe, args.probe_steps, rest)
    probe_wall = time.perf_counter() - start
    per_step = seconds_per_step(probe / "log.csv")
    startup = probe_wall - per_step * args.probe_steps            # imports, data loading, model, saving
    left = args.budget - (time.perf_counter() - start) - startup
    steps = int(args.margin * left / per_step)
    print(f"probe: {per_step:.3f} s/step, start-up {startup:.0f} s; {left:.0f} s left -> {steps} steps", flush=True)
    if steps < args.probe_steps:
        raise SystemExit(f"only {steps} steps fit in the budget of {args.budget:.0f} s; give more time")
    command = pretrain(args.run, steps, rest)
    (args.run / "command.txt").write_text(shlex.join(command) + "\n")
    print(f"ran: {shlex.join(command)} in {time.perf_counter() - start:.0f} s (budget {args.budget:.0f} s)")


if __name__ == "__main__":
    main()
