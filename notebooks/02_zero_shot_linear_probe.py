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
# # 02 · Zero-shot transfer and the linear probe
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/fseft-lab/fseft_lab/blob/main/notebooks/02_zero_shot_linear_probe.ipynb)
#
# <!-- run-info -->*Committed outputs: cpu profile, x86_64 with 2 CPU cores, no GPU, 125 s (executed 2026-12-07 with `fseft-lab notebooks run`).*<!-- /run-info -->
#
# The foundation model already segments the organs it was pre-trained on. On a new scanner or
# population (the **target domain**) it does so less well. This notebook measures that zero-shot
# Dice on the TotalSegmentator-like phantom target, then trains the smallest possible adaptation:
# a **linear probe**, which re-learns only the 1x1x1 head from one labelled volume (k = 1) on top of
# the frozen model's features. It also introduces the few-shot protocol and the trainer that every
# later notebook uses.
#
# **You will learn to**
# - take a structure's head row from the universal head (zero-shot) and start a new one (novel);
# - draw a few-shot split (k support volumes, a validation volume, fixed test volumes);
# - train a linear probe with the paper's protocol and read its learning curve;
# - compare zero-shot and linear-probe Dice per organ and look at where they differ.
#
# **References**
# - J. Silva-Rodríguez, J. Dolz, I. Ben Ayed, *Towards Foundation Models and Few-Shot Parameter-Efficient Fine-Tuning for Volumetric Organ Segmentation*, Medical Image Analysis, 2025, [link](https://github.com/fseft-lab/fseft_lab/blob/main/docs/references.md#paper): the course's source paper

# %%
# Set-up: on Colab, install the course package; elsewhere nothing to do.
import sys
if "google.colab" in sys.modules:
    import subprocess
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "git+https://github.com/fseft-lab/fseft_lab"], check=True)

# %% tags=["parameters"]
import os
profile = os.environ.get("FSEFT_PROFILE", "auto")  # cpu, gpu, paper or auto
seed = 0                                            # the few-shot draw
k = 1                                               # labelled support volumes
tasks = ["pancreas", "liver"]                       # base organs, one binary task each
num_test = 2                                        # test volumes scored (5 in the paper)
data_dir = "../data"

# %%
import inspect
import warnings
warnings.filterwarnings("ignore")
from pathlib import Path

import matplotlib.pyplot as plt
import monai
import pandas as pd

from fseft_lab import viz
from fseft_lab.data.fewshot import not_a_support
from fseft_lab.data.layouts import export_phantom
from fseft_lab.experiments import RunOptions, case_extents, claim, load_cases, run, split_for
from fseft_lab.methods import build, linear_probe, print_trainable_parameters, set_task_head
from fseft_lab.models.foundation import FoundationModel
from fseft_lab.models.zoo import load_foundation
from fseft_lab.profiles import get_profile
import torch
from fseft_lab.models.zoo import checkpoint_geometry

P = get_profile(profile)                # budgets: epochs, crops, subjects
G = checkpoint_geometry("phantom_cpu")  # the course model's voxel size and patch: data is made and read at them
torch.manual_seed(seed)
monai.utils.set_determinism(seed)
plt.rcParams["figure.dpi"] = 100
pd.set_option("display.width", 120)
print(f"torch {torch.__version__} | monai {monai.__version__} | cuda {torch.cuda.is_available()} | profile {P.name} | model: {G}")

# %% [markdown]
# ## 1. The few-shot protocol
#
# The paper adapts with k in {1, 5, 10, all} labelled volumes. A **draw** (a seed) picks k + 1
# volumes from the training pool: k **support** volumes to train on and one **validation** volume;
# the **test** volumes are fixed per task, so every method and draw is scored on the same scans.
#
# **Which scans may be support volumes.** A support volume is the only example a method learns the
# organ from, so it must show the organ whole. Some scans of the TotalSegmentator-like population
# cover the thorax or the pelvis: their field of view cuts the liver to a sliver at the scan's end,
# or misses the spleen. Trained on a sliver that touches the end of the scan, a method can learn
# "liver only at the edge", and a size prior drawn from it (notebook 08) would describe a sliver,
# not a liver. The protocol therefore draws support and validation volumes only among scans that
# show every structure of the task, at least 1 mL of it, with no organ touching either end of the
# scan (`fewshot.not_a_support`; vessels and the oesophagus run on through any field of view and
# may). Test volumes need only show the structure: one the scan cuts is still scored, and flagged
# in the results' `cut` column, so that tables can give whole and cut organs apart.

# %%
ts = export_phantom(Path(data_dir) / f"totalseg_like_{P.name}", "totalsegmentator", cases=P.target_cases,
                    seed=seed, spacing=G.spacing_mm, overwrite=True)
splits = {task: split_for(ts, task, k, seed) for task in tasks}   # the draws run() makes below
test_ids = [c for c in splits[tasks[0]].test if all(c in s.test for s in splits.values())][:num_test]
foundation = load_foundation("phantom_cpu")
trunk_cache = {}  # trunk features of the test volumes, shared by every frozen-trunk method below
for task, split in splits.items():
    print(f"{task}: support {split.support} | validation {split.validation} | test {test_ids}")

# %%
# NBVAL_CHECK_OUTPUT
# how each scan shows the liver, and whether it may be a support volume
shown = {case: case_extents(ts, case, ["liver"])["liver"] for case in ts.case_ids}
pd.DataFrame({"liver_ml": [round(e.ml) for e in shown.values()], "cut": [e.cut for e in shown.values()],
              "support?": [not_a_support({"liver": e}) or "yes" for e in shown.values()]}, index=list(shown))

# %% [markdown]
# ## 2. Zero-shot: the head row the foundation model already has
#
# A binary task keeps one output channel. For a structure of the universal template, the task head
# starts from that structure's row of the pre-trained head, so before any training the adapted
# model **is** the foundation model restricted to one organ. That is the zero-shot baseline (the
# paper calls it "generalization"). A novel structure, which the template does not have, gets a new
# row instead (notebook 07).

# %%
print(inspect.getsource(set_task_head))

# %%
# NBVAL_CHECK_OUTPUT
zero_shot_model = build(foundation, "zero_shot", ["pancreas"])
print(zero_shot_model.classifier)
print_trainable_parameters(zero_shot_model)

# %% [markdown]
# ## 3. The linear probe
#
# The trunk maps a crop to features $f(x) \in \mathbb{R}^{F \times X \times Y \times Z}$; the head is a
# 1x1x1 convolution, i.e. the same logistic regression at every voxel:
#
# $$p(\text{organ} \mid x)_v = \sigma\left(w^\top f(x)_v + b\right), \qquad w \in \mathbb{R}^F,\ b \in \mathbb{R}.$$
#
# The linear probe trains only $w$ and $b$: $F + 1$ numbers (49 at the paper's $F = 48$), starting
# from the zero-shot row. Its whole implementation:

# %%
print(inspect.getsource(linear_probe))

# %%
# NBVAL_CHECK_OUTPUT
for width in sorted({P.geometry.feature_size, 48}):
    print(f"feature size {width:2d}:", end=" ")
    print_trainable_parameters(build(FoundationModel(width), "linear_probe", ["pancreas"]))

# %% [markdown]
# **The trainer.** `fseft_lab.adapt.adapt` follows the paper: each step draws random crops of one
# support volume (positive:negative 1:1), AdamW at the method's learning rate (1e-2 for the probe),
# one warm-up epoch then a cosine decay, and early stopping when the training Dice loss stops
# improving. Because the trunk is frozen, its features for a crop never change: the trainer draws a
# bank of crops once, runs the trunk over each once, and then every epoch costs only the head
# (the **feature cache**, measured in notebook 03). `experiments.run` wraps it: split, adapt, score
# the test volumes, one tidy row per (case, structure). Beyond (task, method, k, seed), its settings
# (profile, test volumes, caches, post-processing) travel in one `RunOptions`.

# %%
tables, results = [], {}
for task in tasks:
    for method in ("zero_shot", "linear_probe"):
        table, result = run(foundation, ts, task, method, k, seed,
                            RunOptions(profile=P.name, trunk_cache=trunk_cache, test=test_ids))
        tables.append(table)
        results[task, method] = result
table = pd.concat(tables, ignore_index=True)
print(f"{len(table)} rows: {list(table.columns)[:8]} ...")

# %% [markdown]
# ## 4. The learning curve
#
# The training Dice loss per epoch (over the crops of that epoch). With one support volume an epoch is
# one step, and on cached features all the epochs the curve shows, with the trunk's passes over the crop bank,
# take seconds (printed above the figure).

# %%
for task in tasks:
    probe = results[task, "linear_probe"]
    print(f"{task}: {probe.epochs_run} epochs in {probe.train_seconds:.1f} s")
ax = viz.plot_learning_curves({f"linear probe, {task}": results[task, "linear_probe"].curve for task in tasks})
_ = ax.set_title(f"k = {k}, seed {seed}")

# %% [markdown]
# ## 5. Dice on the test volumes
#
# Dice is the overlap of the predicted and the true mask, from 0 to 1 (1 is perfect). Before
# scoring, each structure that is anatomically one piece (an organ, not a tumour) keeps only its
# largest connected component, which removes stray islands of voxels far from the organ
# (`post_processing` column; `run(..., RunOptions(largest_component=False))` scores the raw masks). The figure
# shows the masks that were scored.

# %%
summary = table.pivot_table(index="task", columns="method", values="dice", aggfunc="mean")[["zero_shot", "linear_probe"]]
summary["gain"] = summary.linear_probe - summary.zero_shot
summary.round(3)

# %%
# NBVAL_CHECK_OUTPUT
for task in tasks:
    print(claim(summary.loc[task], "linear_probe", "zero_shot", f"the {task}, k = {k}"))

# %%
task = tasks[0]
case = load_cases(ts, [test_ids[0]], [task], G)[0]
masks = {m: results[task, m].test_masks[test_ids[0]][0] for m in ("zero_shot", "linear_probe")}   # as scored
_ = viz.compare_figure(case["image"][0], case["label"][0] == 1, masks, task, spacing=[G.spacing_mm] * 3)

# %% [markdown]
# **Reading the result.** Organs the foundation model already segments well on the target (the
# liver) have little room to gain from re-learning a head, because the features are fine and the head
# was already close: the checked line prints the probe and zero-shot within about a hundredth of each other on
# the liver, a difference that one draw scored on two test volumes cannot settle either way. Organs whose zero-shot Dice is low have more room to gain, but a linear head can only re-weight
# features the frozen trunk computes; where the trunk does not separate the organ from its
# neighbours, no head can. The shipped phantom model is also far smaller and less trained than the
# paper's (notebook 01 prints its mean Dice on its own source domains), which lowers every zero-shot
# number here. The next notebook adds capacity on top of the same frozen
# features: black-box adapters.
#
# ## Exercises
#
# 1. Set `k = 5` and re-run. Does the linear probe gain more from more shots than zero-shot does?
# 2. Run the probe with `config=AdaptConfig(lr=1e-3)` and with `lr=1e-1` (`from fseft_lab.adapt import
#    AdaptConfig`). Which rate does the learning curve favour? Why can a probe take a rate 100 times
#    larger than full fine-tuning's 1e-4?
# 3. Pass `validate=True` to `run` and plot `result.curve.val_dice`: when does the validation Dice
#    stop improving, and does the early-stopping rule see it?
#
# <details><summary>Solutions</summary>
#
# 1. With more shots the probe sees more positive crops and its Dice rises and varies less across
#    draws; zero-shot does not use the labels, so it stays where it was.
# 2. At 1e-3 the head barely moves in at most 200 steps (`result.epochs_run` says how many ran); at 1e-1 the loss typically oscillates. A head on
#    fixed features is a logistic regression, a convex problem that tolerates a large rate; full
#    fine-tuning moves millions of weights whose effects compound, so it needs a small one.
# 3. Compare the epoch where the validation Dice flattens with the epoch where the training loss
#    does: the paper's rule watches the training loss only, so it can stop later than a validation
#    rule would (or, on a tiny support set, earlier).
# </details>
#
# ## What you learned
# - Zero-shot is the foundation model with its head restricted to the task's rows.
# - A few-shot split fixes the test volumes and draws k support volumes plus one for validation.
# - The linear probe trains F + 1 numbers; with a frozen trunk its features can be cached.
# - A head can only re-weight what the trunk computes: the limit the next notebooks lift.
#
# Next: **03 · black-box spatial adapters and the feature cache**.
