# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 · The FSEFT benchmark: every method, across shots and seeds
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/fseft-lab/fseft_lab/blob/main/notebooks/09_benchmark.ipynb)
#
# <!-- run-info -->*Committed outputs: cpu profile, x86_64 with 2 CPU cores, no GPU, 19 s (executed 2026-12-07 with `fseft-lab notebooks run`).*<!-- /run-info -->
#
# Notebooks 02-08 each ran one method on one draw of the support set. One draw is an anecdote: the
# Dice changes from one support volume to another, and a single draw cannot say by how much (on the
# phantoms the spread across draws turns out small: the +- column of section 2). This notebook reads the
# **benchmark**: the paper's experiments re-run by this project's own code on the phantom targets,
# every method at k = 1, 5 and 10 over several draws, written to one tidy table under `results/`
# by `fseft-lab benchmark`. Nothing is retrained here.
#
# **You will learn to**
# - read a results manifest: what ran, where, on which model, and what is missing;
# - lay out a few-shot benchmark like the paper (method x k, mean +- std over draws) and plot it;
# - weigh Dice against trainable parameters, and look past the mean at single structures;
# - compare with the paper point by point, and say why a phantom agrees or does not.
#
# **References**
# - J. Silva-Rodríguez, J. Dolz, I. Ben Ayed, *Towards Foundation Models and Few-Shot Parameter-Efficient Fine-Tuning for Volumetric Organ Segmentation*, Medical Image Analysis, 2025, [link](https://github.com/fseft-lab/fseft_lab/blob/main/docs/references.md#paper): the course's source paper
# - Y. Tang et al., *Self-Supervised Pre-Training of Swin Transformers for 3D Medical Image Analysis*, CVPR 2022, [link](https://github.com/fseft-lab/fseft_lab/blob/main/docs/references.md#swin_ssl): the self-supervised encoder the paper starts from

# %%
# Set-up: on Colab, install the course package; elsewhere nothing to do.
import sys
if "google.colab" in sys.modules:
    import subprocess
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "git+https://github.com/fseft-lab/fseft_lab"], check=True)

# %% tags=["parameters"]
results_dir = None                   # None: the course's committed results/ (in a clone or the installed package)
results_name = "benchmark_short"     # <results_dir>/<name>.csv and its manifest <name>.json

# %%
import json
import warnings
warnings.filterwarnings("ignore")
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from fseft_lab.benchmark import read_grid, split_method
from fseft_lab.course_files import course_path
from fseft_lab.experiments import summary
from fseft_lab.models import zoo

plt.rcParams["figure.dpi"] = 100
pd.set_option("display.width", 140)
results = Path(results_dir) if results_dir else course_path("results")
table = pd.read_csv(results / f"{results_name}.csv")
manifest = json.loads((results / f"{results_name}.json").read_text())
table["spec"] = table.method.where(table.transductive == "none", table.method + "+" + table.transductive)
print(f"pandas {pd.__version__} | {len(table)} rows: one per (run, test volume, structure); columns {list(table.columns)}")

# %% [markdown]
# ## 1. What was run, where, and on which model
#
# The grid file says what the benchmark should run; the manifest says what did run. A benchmark
# that stops at a deadline and resumes later may have run on several machines: each invocation is
# recorded with its command, hardware, software and wall time (the run log, in the appendix). The
# seconds a run took depend on the machine, so every row carries its `device` too. Where the check
# below prints False, the benchmark ran on an earlier `phantom_cpu` than the one shipped now (the
# manifest's sha256): every Dice in this notebook, zero-shot included, is then that model's; the
# comparisons between methods are comparisons on it, and notebook 01 scores the shipped one.

# %%
blocks = read_grid(course_path(manifest["grid"]))  # the grid file the manifest names, e.g. grids/fseft_phantom_short.toml
print(f"grid {manifest['grid']}, profile {manifest['profile']}: {manifest['runs_done']} of {manifest['runs_in_grid']} runs done")
print(f"foundation model: {manifest['checkpoint']} (weights sha256 {manifest['weights_sha256'][:12]}...)")
shipped = zoo.local_path(zoo.get_checkpoint("phantom_cpu"))
print(f"the same weights as the zoo's phantom_cpu: {zoo.weights_sha256(shipped) == manifest['weights_sha256']}")
if "removed" in manifest:
    print("NOTE:", manifest["removed"])
devices = sorted({i["hardware"]["device"] for i in manifest["invocations"]})
print(f"{len(manifest['invocations'])} invocations of `fseft-lab benchmark` on {', '.join(devices)} (the run log is in the appendix)")


# %%
def coverage(block):
    """Runs done / runs in the grid, per method of a block."""
    rows = []
    for spec in block.methods:
        method, ti = split_method(spec)
        part = table[(table.spec == spec) & table.task.isin(block.tasks) & (table.decoder == block.decoder)]
        done = part.groupby(["task", "k", "seed"]).ngroups
        rows.append({"block": block.name, "method": spec,
                     "runs done": f"{done} / {len(block.tasks) * len(block.ks) * len(block.seeds)}"})
    return rows

pd.DataFrame([r for b in blocks for r in coverage(b)]).pivot(index="method", columns="block", values="runs done").fillna("-")


# %% [markdown]
# ## 2. The headline table: base organs, multi-class, FLARE-like target
#
# Nine base organs as one softmax task on the non-contrast FLARE-like target (the foundation model
# learned them on contrast-enhanced sources). Each cell is the Dice averaged over the test volumes
# and the nine organs, then the mean +- std over the draws of the support set (the `draws` column
# counts them; a cell with one draw shows its mean alone), laid out like the paper's tables.
# Trainable parameters are those of the cpu-profile model (feature size 12).
#
# Two things to keep in mind when reading the +- column. The target dataset has 16 phantom
# subjects, 5 of them for testing, so the pool holds 11: at k = 10 every draw shares at least 9 of
# its 10 volumes with every other, and the spread mostly measures training noise, not the choice of
# volumes. And phantom subjects differ far less from each other than patients do, so even at
# k = 1 the draws agree more closely than in the paper.

# %%
# NBVAL_CHECK_OUTPUT
def paper_table(part):
    stats = summary(part, by=("spec", "k"))
    spread = (" +- " + stats.dice_std.round(3).astype(str)).where(stats.dice_std.notna(), "")  # one draw: no spread
    out = (stats.dice.round(3).astype(str) + spread).unstack("k")
    out = out[sorted(out.columns)]
    out.columns = [f"k = {k}" for k in out.columns]
    out.insert(0, "trainable", stats.params.groupby(level="spec").first().astype(int))
    out.insert(1, "draws", part.groupby("spec").seed.nunique())
    order = [s for b in blocks for s in b.methods]
    return out.loc[sorted(out.index, key=order.index)]

flare = table[table.task == "base_organs"]
paper_table(flare)


# %%
def dice_vs_k(part, ax, title):
    stats = summary(part, by=("spec", "k")).reset_index()
    for spec, s in stats.groupby("spec", sort=False):
        ax.errorbar(s.k, s.dice, yerr=s.dice_std.fillna(0), marker="o", capsize=3, label=spec,
                    linestyle="--" if spec == "zero_shot" else "-")
    ax.set(xlabel="k (labelled volumes)", ylabel="Dice", xticks=sorted(part.k.unique()), title=title)

fig, ax = plt.subplots(figsize=(7, 4))
dice_vs_k(flare, ax, "FLARE-like, 9 organs, multi-class")
ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
plt.show()

# %% [markdown]
# ## 3. Dice against trainable parameters
#
# The point of FSEFT: how much Dice does each trainable parameter buy? The x axis is logarithmic;
# full fine-tuning sits far to the right of everything else (the cell prints how far).

# %%
stats = summary(flare, by=("spec", "k")).reset_index()
fig, axes = plt.subplots(1, stats.k.nunique(), figsize=(12, 3.6), sharey=True)
for ax, (k, s) in zip(np.atleast_1d(axes), stats.groupby("k")):
    params = s.params.clip(lower=1)  # zero-shot trains nothing: drawn at 1
    ax.scatter(params, s.dice)
    for x, y, name in zip(params, s.dice, s.spec):
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xscale="log", xlabel="trainable parameters (log)", title=f"k = {k}")
np.atleast_1d(axes)[0].set_ylabel("Dice")
fig.tight_layout()
params = stats.groupby("spec").params.first()
if "full_ft" in params:
    largest = params.drop(["full_ft", "scratch"], errors="ignore").idxmax()
    ratio = params["full_ft"] / params[largest]
    print(f"full_ft trains {ratio:.0f} times the parameters of the largest PEFT method here ({largest}): "
          f"{np.log10(ratio):.1f} orders of magnitude")

# %% [markdown]
# ## 4. Past the mean: organ by organ
#
# A mean over nine organs hides where a method helps. At five shots, per organ (mean over draws
# and test volumes): the large, high-contrast organs (liver, kidney, spleen) are already found
# zero-shot; the gain is largest in the thin ones (oesophagus, aorta), then in the stomach, the
# gallbladder and the duodenum, whose appearance the domain shift changes most.

# %%
k_shown = 5 if 5 in flare.k.values else int(flare.k.max())
per_organ = flare[flare.k == k_shown].groupby(["structure", "spec"]).dice.mean().unstack("spec")
per_organ = per_organ[[s for s in paper_table(flare).index if s in per_organ]]
fig, ax = plt.subplots(figsize=(9, 4))
im = ax.imshow(per_organ.values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
ax.set(xticks=range(per_organ.shape[1]), yticks=range(per_organ.shape[0]), title=f"Dice per organ, k = {k_shown}")
ax.set_xticklabels(per_organ.columns, rotation=40, ha="right", fontsize=8)
ax.set_yticklabels(per_organ.index, fontsize=8)
for (i, j), v in np.ndenumerate(per_organ.values):
    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
fig.colorbar(im, ax=ax, fraction=0.03)
plt.show()

# %% [markdown]
# ## 5. The other blocks: binary TotalSegmentator-like organs, novel structures
#
# The same table for the other two blocks of the grid, with whatever has run so far (section 1
# says how much). An empty table means the block has not run yet: resume the benchmark with the
# command in the manifest, on a GPU if you have one. The `draws` column says how many draws of the
# support set each mean rests on. Where methods have run on different sets of tasks, a block's mean
# compares unlike things; for the binary block the second table therefore shows each organ at
# k = 1, one column per method.

# %%
for block in blocks[1:]:
    part = table[table.task.isin(block.tasks) & (table.decoder == block.decoder) & table.spec.isin(block.methods)]
    print(f"{block.name}: {part.groupby(['task', 'spec', 'k', 'seed']).ngroups} of {block.runs} runs")
    if len(part):
        display(paper_table(part))
    else:
        print("  not run yet")
    if block.decoder == "frozen" and len(part):  # binary: one task per organ; like with like, at k = 1
        per_task = part[part.k == 1].groupby(["task", "spec"]).dice.mean().unstack("spec")
        display(per_task[[s for s in block.methods if s in per_task]].round(3))

# %% [markdown]
# ## 6. What it cost
#
# Seconds of training per run (to the early stop, or the last epoch), on the machine each run used,
# mean over draws. Frozen-trunk methods first compute the trunk's features of their crops once
# (not counted here; shared by all of them), then train only the head on the cache. The cost of
# every method at the paper's configuration on a GPU (does it fit a 16 GB Colab T4?) is measured
# by `benchmarks/method_costs.py` and kept in `results/method_costs.md` (printed in the appendix). Seconds
# compare only within one device, and only when the runs had the machine to themselves: the
# manifest's notes say when they did not (the cpu rows here shared two cores with other runs: the run log's workers column).

# %%
per_run = flare.groupby(["device", "spec", "k", "seed"], sort=False).agg(seconds=("train_seconds", "first"),
                                                                       epochs=("epochs", "first"))
costs_per_k = per_run.groupby(["device", "spec", "k"], sort=False).mean().unstack("k").round(1)
costs_per_k[[(c, k) for c in ("seconds", "epochs") for k in sorted(flare.k.unique())]]


# %% [markdown]
# ## 7. Against the paper, point by point
#
# `results/paper_reported.csv` (printed in appendix C) holds the paper's numbers that the checks
# below compare with, and its `source` column says where each comes from. Not all are from the
# journal version cited in the title cell: the binary TotalSegmentator-like numbers (findings 1
# and 3) come from a table of the paper's earlier **workshop version**, the FLARE zero-shot figure
# (finding 2) from the journal's text, and the novel-structure numbers (finding 4) from a journal
# table. The findings table's `paper` column is therefore the workshop version's for findings 1
# and 3. The paper's targets are real CT; ours are phantoms, and our model is a
# 4-million-parameter cpu-profile SwinUNETR, not the 62-million one. Absolute Dice values are
# therefore not comparable; the **direction** of each finding is. Each check below is computed from
# the table, so it stays true when the benchmark is re-run; until then, it describes the model the
# manifest names (section 1).

# %%
def mean_dice(block_task, spec, k):
    part = table[block_task & (table.spec == spec) & (table.k == k)]
    return part.groupby("seed").dice.mean().mean() if len(part) else np.nan

def common_tasks(where, specs, k):  # the tasks every one of specs has run at k: compare like with like
    done = table[where & (table.k == k)].groupby("spec").task.unique()
    return set.intersection(*(set(done.get(s, [])) for s in specs))

def paired_gains(where, spec, baseline, k):  # Dice gain over baseline per (task, draw) both have run
    per_run = table[where & (table.k == k)].groupby(["spec", "task", "seed"]).dice.mean().unstack("spec")
    if spec not in per_run or baseline not in per_run:
        return pd.Series(dtype=float)
    return (per_run[spec] - per_run[baseline]).dropna()

is_flare = table.task == "base_organs"
is_binary = table.task.isin(blocks[1].tasks) & (table.decoder == "frozen")
settings = {"FLARE-like": is_flare, "TS-like binary": is_binary}
is_novel = table.decoder == "fine-tuned"
findings = []
reported = pd.read_csv(results / "paper_reported.csv")

def paper(method, k, block):  # the paper's Dice as transcribed in results/paper_reported.csv
    row = reported[(reported.method == method) & (reported.k == k) & reported.block.str.startswith(block)]
    return float(row.dice.iloc[0])

def source(block):  # which version of the paper a block's figures come from
    return reported[reported.block.str.startswith(block)].source.iloc[0]

# %% [markdown]
# Findings 1 and 2: full fine-tuning against the black-box adapters at k = 1, and PEFT against zero-shot.
# Every `paper` entry below is read from `results/paper_reported.csv` and names its source. Finding 2
# rests only on the journal's approximate zero-shot figure for FLARE: the paper's k = 10 scores for
# that task are not in the file, so the check asks only whether some PEFT method beats zero-shot.

# %%
trio = ("full_ft", "spatial_adapter", "linear_probe")
for name, where in settings.items():
    tasks = common_tasks(where, trio, 1)
    ft1, sa1, lp1 = (mean_dice(where & table.task.isin(tasks), s, 1) for s in trio)
    findings.append({"finding": f"1. k = 1: full FT loses to the black-box adapters ({name})",
                     "paper": f"FT {paper('full_ft', 1, 'base organs, binary'):.3f} vs spatial adapter "
                              f"{paper('spatial_adapter', 1, 'base organs, binary'):.3f}, LP "
                              f"{paper('linear_probe', 1, 'base organs, binary'):.3f} "
                              f"(TotalSegmentator, {source('base organs, binary')})",
                     "phantom": f"FT {ft1:.3f} vs spatial adapter {sa1:.3f}, LP {lp1:.3f} ({len(tasks)} task(s))"
                                if tasks else "not run yet",
                     "agrees": bool(ft1 < max(sa1, lp1)) if tasks else None})
zs = mean_dice(is_flare, "zero_shot", 1)
best10 = max(((mean_dice(is_flare, s, 10), s) for s in flare.spec.unique() if s not in ("zero_shot", "full_ft")), default=(np.nan, ""))
findings.append({"finding": "2. a few shots of PEFT lift the model well above zero-shot (FLARE-like)",
                 "paper": f"zero-shot ~{paper('zero_shot', 0, 'base organs, multi-class'):.2f} "
                          f"(FLARE, {source('base organs, multi-class')})",
                 "phantom": f"zero-shot {zs:.3f}; best PEFT at k = 10: {best10[1]} {best10[0]:.3f}",
                 "agrees": bool(best10[0] > zs) if not np.isnan(best10[0]) else None})


# %% [markdown]
# Finding 3: transductive inference, paired with the same draws without it; the last row pairs
# runs trained on equal schedules (`benchmarks/transductive.py`, see below).

# %%
paper_ti_gains = {k: paper("spatial_adapter+penalty", k, "base organs, binary") - paper("spatial_adapter", k, "base organs, binary")
                  for k in (1, 5)}

def ti_finding(name, gains):  # gains: TI minus no TI per paired run, indexed by k; a gain counts beyond 2 std errors
    by_k = {k: g for k, g in gains.groupby(level="k")}
    return {"finding": f"3. transductive inference adds about one Dice point at low k ({name})",
            "paper": ", ".join(f"{ti_gain:+.3f} (k = {k})" for k, ti_gain in paper_ti_gains.items())
                     + f" ({source('base organs, binary')})",
            "phantom": ", ".join(f"{g.mean():+.3f} (k = {k}, {g.mean() / g.sem():.1f} std errors)" for k, g in by_k.items())
                       + f"; higher in {(gains > 0).sum()} of {len(gains)} paired runs" if by_k else "not run yet",
            "agrees": all(g.mean() > 2 * g.sem() for g in by_k.values()) if by_k else None}

for name, where in settings.items():
    findings.append(ti_finding(name, pd.concat({k: paired_gains(where, "spatial_adapter+penalty", "spatial_adapter", k)
                                                for k in (1, 5)}, names=["k"])))
# benchmarks/transductive.py: the same draws with and without TI (the penalty), both trained the same 200 steps
equal = pd.concat([pd.read_csv(p) for p in sorted(results.glob("transductive*.csv"))])
per_draw = equal.groupby(["k", "task", "seed", "transductive"]).dice.mean().unstack("transductive")
equal_ti = (per_draw["penalty"] - per_draw["none"]).dropna()
findings.append(ti_finding("equal schedules", equal_ti.loc[[1, 5]]))  # k = 10 too: in the table below

# %% [markdown]
# Finding 4: novel structures, checked at the paper's k = 10 only (below: why not at k = 1). Then
# all findings in one table. The two `scratch` rows are different baselines: the paper's trains
# the network starting from self-supervised encoder weights (Tang et al. 2022), while the course's
# `scratch` re-initialises every weight at random (notebook 07), a weaker start. Only the order of
# the three methods is compared; the size of scratch's gap is not comparable with the paper's.

# %%
trio = ("lora", "full_ft", "scratch")
tasks = common_tasks(is_novel, trio, 10)
lora, ft, scratch = (mean_dice(is_novel & table.task.isin(tasks), s, 10) for s in trio)
findings.append({"finding": "4. novel structures: decoder + LoRA > full FT > scratch",
                 "paper": " > ".join(f"{paper(m, 10, 'novel'):.3f}" for m in trio) + f" (k = 10, {source('novel')})",
                 "phantom": f"{lora:.3f}, {ft:.3f}, {scratch:.3f} ({', '.join(sorted(tasks))})" if tasks
                            else "not run yet at k = 10",
                 "agrees": bool(lora > ft > scratch) if tasks else None})
pd.set_option("display.max_colwidth", 80)
pd.DataFrame(findings).set_index("finding")

# %% [markdown]
# Finding 3, organ by organ. In the grid, the runs with TI train all 200 epochs while the runs
# without it stop early; `benchmarks/transductive.py` trains both for the same 200 steps (at 1e-3,
# where the grid uses the paper's 1e-4), on the same draws. Draw 0 is the grid's own support volume,
# so its two columns share the support volume and the organ but differ in two ways: the schedule
# (equal lengths or not) and the learning rate.

# %%
binary_grid = pd.concat({k: paired_gains(is_binary, "spatial_adapter+penalty", "spatial_adapter", k) for k in (1, 5, 10)},
                        names=["k"]).xs(0, level="seed").rename("grid (TI trains longer), draw 0")
by_organ = equal_ti.groupby(["k", "task"]).agg(["mean", "count"]).set_axis(["equal schedules, mean", "draws"], axis=1)
by_organ.insert(0, "equal schedules, draw 0", equal_ti.xs(0, level="seed"))
by_organ.join(binary_grid).round(3)

# %% [markdown]
# Finding 4 rests on a mean over sixteen parts, so look at them one by one. Dice alone
# cannot tell an empty prediction from a wrong blob: both score near 0. Beside each part's Dice is
# the **volume ratio**, predicted over true volume summed over the test volumes: 0 means the model
# predicts (almost) nothing there, 1 the right amount, 10 a blob ten times the part's size.

# %%
novel10 = table[is_novel & (table.k == 10) & table.spec.isin(trio)]
parts = novel10.groupby(["task", "structure", "spec"]).agg(dice=("dice", "mean"), predicted=("predicted_ml", "sum"),
                                                           true=("truth_ml", "sum"))
parts["volume ratio"] = parts.predicted / parts.true
parts[["dice", "volume ratio"]].unstack("spec").reindex(columns=list(trio), level="spec").round(2)

# %% [markdown]
# **Why the phantom agrees or not.**
#
# - *Finding 1 does not hold here, and the reason is instructive.* It fails on both blocks: in the
#   binary TotalSegmentator-like block, the paper's own setting, full fine-tuning from one volume
#   beats the linear probe and the spatial adapter organ by organ (section 5). The paper's full
#   fine-tuning updates a model 48 channels wide from one volume and collapses. Our cpu-profile
#   model is 12 wide, many times smaller (the `trainable` column). The phantom subjects do vary
#   (size, fat, organs present, field of view: notebook 00), but their organs are smooth
#   ellipsoids and tubes with filtered-noise textures, without real anatomy's detail, pathology or
#   artefacts; one phantom volume may therefore leave less to overfit to than one real patient, a
#   plausible reason that this benchmark does not test. The target shift is also mostly an
#   intensity shift (another contrast phase, another scanner), which a model that can move every
#   weight can absorb quickly. Real CT varies in anatomy, pathology and field of view far more than
#   one support volume can show.
# - *Finding 2 holds*: BitFit and Affine-LN, a few thousand trainable parameters, lift the
#   multi-class Dice from the zero-shot level to within a few points of full fine-tuning, and the
#   linear probe gets most of the way at k = 1 (section 2).
# - *Finding 3: read the equal-schedules row, not the grid's.* In the grid the runs with TI train
#   all 200 epochs (the query term starts half-way, so no early stop) while the runs without TI stop
#   early, so their gain mixes TI with training time; the equal-schedules row removes that
#   difference, and its standard errors say which gains stand out of the noise of the draws. The
#   organ-by-organ table shows where a gain comes from: the thin, low-contrast organs, whose size an
#   adapter trained on one volume misjudges. Appendix D has the details.
# - *Finding 4 is not settled here.* On the heart, decoder + LoRA and full fine-tuning find the
#   four chambers and miss the myocardium (a shell around the left ventricle), and scratch is far
#   behind: the paper's order, within a point. Scratch is not the paper's baseline, though: the
#   paper's starts from self-supervised weights, ours from a random initialisation, so its gap
#   here says more about pre-training at all than about the paper's comparison. On the lung lobes and the gluteus groups the adapted
#   models find one part each and predict next to nothing for the others (volume ratio 0.00), while
#   scratch predicts blobs many times a part's volume, so the three-task mean cannot tell the
#   methods apart. The cause is the one that rules out k = 1: a novel structure gets a new head
#   row, which starts at p = 0.02, and with the decoder unfrozen every method trains at the paper's
#   1e-4 for the cpu profile's few steps. That is enough for the heart's chambers, which stand out
#   by contrast, not for lobes that share one lung intensity (the phantom splits them by fissure
#   surfaces it does not draw) or muscles that look alike. At k = 1 (section 5) the adapted models
#   predict nothing. A fair test of finding 4 needs the gpu profile's longer schedule (notebook 07),
#   or a new head row that learns faster than the trunk.
#
# ## Exercises
#
# 1. From the table, compute the Dice gain over zero-shot per thousand trainable parameters at
#    k = 5 for each method. Which method buys the most Dice per parameter?
# 2. Which organ gains most from five shots of BitFit over zero-shot? Look at section 4 and at
#    the phantom domains in notebook 00: what about that organ changes in the target domain?
# 3. Run one missing cell of the grid on your machine, e.g. `fseft-lab benchmark --grid
#    grids/fseft_phantom_short.toml --out /tmp/b.csv --only "novel structures, decoder fine-tuned"`
#    (stop it with Ctrl-C after a few runs; it resumes), and add its rows to the tables above.
#
# <details><summary>Solutions</summary>
#
# 1. `s = summary(flare, by=("spec", "k")).xs(5, level="k"); (s.dice - s.loc["zero_shot", "dice"]) / (s.params / 1000)`:
#    the linear probe buys by far the most (it trains the fewest parameters, the `trainable` column),
#    the black-box and selective methods far less per parameter, full fine-tuning the least.
# 2. The thin, low-contrast structures whose intensity the non-contrast domain changes most (the
#    oesophagus and the aorta): without contrast the aorta is no brighter than muscle.
# 3. `pd.concat([table, pd.read_csv("/tmp/b.csv")])` and run the cells again; with one seed the
#    cells show their mean alone (`draws` 1).
# </details>
#
# ## What you learned
# - A benchmark is a grid file, one tidy table and a manifest that says what ran where; a run cut
#   short resumes, and the tables show what is missing instead of hiding it.
# - Mean +- std over draws, Dice against log-parameters, and organ-by-organ views answer different
#   questions; read a gain against the spread across draws.
# - A phantom reproduces a finding only where it reproduces its cause: the intensity domain gap
#   yes, the variability of real anatomy no.
#
# Next: **10 · your own data**, the same tools on real CT.

# %% [markdown]
# ## Appendix
#
# ### A. The run log
#
# Every invocation of `fseft-lab benchmark` that wrote to this table: when, on which device, with
# how many workers, its wall time, and how many runs were done after it.

# %%
pd.DataFrame([{"date": i["date"], "device": i["hardware"]["device"], "cpus": i["hardware"]["cpus"], "workers": i["workers"],
               "wall s": i["wall_seconds"], "finished": i["finished"], "runs done after": i["runs_done_after"]}
              for i in manifest["invocations"]])

# %% [markdown]
# ### B. Every method's cost at the paper's configuration on a GPU
#
# From `results/method_costs.md`, written by `benchmarks/method_costs.py` (section 6).

# %%
costs = (results / "method_costs.md").read_text()
print(costs[costs.index("## Paper configuration"):costs.index("## cpu profile")])

# %% [markdown]
# ### C. The paper's numbers
#
# `results/paper_reported.csv`, the numbers section 7 compares with, as transcribed from the paper.
# The `source` column says which version: `workshop table` rows come from the earlier workshop
# version of the paper, `journal text` and `journal table` rows from the journal version (Medical
# Image Analysis, the title cell's reference). The `note` column says what each `scratch`,
# `full_ft` and decoder row trained in the paper.

# %%
pd.read_csv(results / "paper_reported.csv")

# %% [markdown]
# ### D. Notes on finding 3: what the equal-schedules runs change
#
# `benchmarks/transductive.py` trains with and without TI for the same 200 steps (at 1e-3, where
# the grid uses the paper's 1e-4) on the same draws, on the organs where the grid saw its largest
# gains plus the spleen and the pancreas. Draw 0 is the grid's own support volume, so the table's
# "equal schedules, draw 0" and "grid, draw 0" columns share the support volume, but differ in the
# schedule (equal lengths, or TI training longer) and in the learning rate (1e-3 against the
# paper's 1e-4). Where the grid's column is much larger, the likely cause is the extra training the
# TI runs get, not TI itself; the two runs do not separate the schedule from the learning rate, so
# that reading is an inference, not a measurement. A grid that wants to credit TI needs a baseline
# on the TI runs' schedule and learning rate. Notebook 08 reads the same runs draw by draw: where a
# draw's adapter got the size wrong, the size prior has something to correct.
