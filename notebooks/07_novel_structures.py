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
# # 07 · Novel structures: decoder fine-tuning, full fine-tuning, scratch
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/fseft-lab/fseft_lab/blob/main/notebooks/07_novel_structures.ipynb)
#
# <!-- run-info -->*Committed outputs: cpu profile, x86_64 with 2 CPU cores, no GPU, 220 s (executed 2026-12-07 with `fseft-lab notebooks run`).*<!-- /run-info -->
#
# So far every task was a base organ: the foundation model had a head row for it. A **novel**
# structure (a lung lobe, a heart chamber, a gluteal muscle) was never labelled in pre-training: its
# head row is new, and the decoder was never asked to draw its boundaries. The paper's answer is to
# fine-tune the **decoder** with a new head while the encoder stays frozen (optionally with a PEFT
# method in the encoder), and to compare that with fine-tuning **everything** and with training
# **from scratch**.
#
# **You will learn to**
# - start a task head with a new row and choose the decoder option (frozen, fine-tuned, new);
# - compare what decoder fine-tuning, full fine-tuning and scratch train, and what each step costs;
# - read why the foundation model's encoder is worth keeping even for structures it never saw.
#
# The `cpu` profile trains on few crops per step and scores one test volume: the `gpu` profile runs the
# fuller schedule.
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
task = "heart"                                      # the paper's novel heart task: five parts, one softmax
epochs = None                                       # None: 80 on the cpu profile, else the profile's
lr = None                                           # None: 1e-3 on the cpu profile, else the paper's 1e-4
num_test = 1                                        # test volumes scored (each costs seconds of inference on a CPU)
data_dir = "../data"

# %%
import inspect
import math
import warnings
warnings.filterwarnings("ignore")
from pathlib import Path

import matplotlib.pyplot as plt
import monai
import numpy as np
import pandas as pd
import torch

from fseft_lab import anatomy, viz
from fseft_lab.adapt import AdaptConfig, adapt
from fseft_lab.data.layouts import export_phantom
from fseft_lab.experiments import RunOptions, claim, load_cases, run, split_for
from fseft_lab.methods import DECODER_MODULES, build, scratch, trainable_parameters
from fseft_lab.models.zoo import load_foundation
from fseft_lab.profiles import get_profile
from fseft_lab.models.zoo import checkpoint_geometry

P = get_profile(profile)                # budgets: epochs, crops, subjects
G = checkpoint_geometry("phantom_cpu")  # the course model's voxel size and patch: data is made and read at them
epochs = epochs or (80 if P.name == "cpu" else P.num_epochs)  # the encoder cache makes decoder epochs cheap
lr = lr or (1e-3 if P.name == "cpu" else 1e-4)
torch.manual_seed(seed)
monai.utils.set_determinism(seed)
plt.rcParams["figure.dpi"] = 100
pd.set_option("display.width", 120)
print(f"torch {torch.__version__} | monai {monai.__version__} | cuda {torch.cuda.is_available()} | profile {P.name} | model: {G}")

# %% [markdown]
# ## 1. Novel structures
#
# The paper's novel tasks are TotalSegmentator structures that no pre-training dataset labels:

# %%
# NBVAL_CHECK_OUTPUT
for group, parts in anatomy.NOVEL_GROUPS.items():
    print(f"{group:11s} {', '.join(parts)}")
structures, multiclass = anatomy.task_structures(task)
print(f"task {task!r}: {len(structures)} structures, {'one softmax' if multiclass else 'binary'}; "
      f"novel: {all(anatomy.is_novel(s) for s in structures)}")

# %%
ts = export_phantom(Path(data_dir) / f"totalseg_like_{P.name}", "totalsegmentator", cases=P.target_cases,
                    seed=seed, spacing=G.spacing_mm, overwrite=True)
split = split_for(ts, task, k, seed)  # support volumes show every part whole; test volumes show the heart
test_ids = list(split.test[:num_test])
foundation = load_foundation("phantom_cpu")
print(f"support {split.support} | validation {split.validation} | test {test_ids}")
support = load_cases(ts, split.support, structures, G)
_ = viz.overlay_figure(support[0]["image"][0], support[0]["label"][0], structures, spacing=[G.spacing_mm] * 3,
                       title=f"support volume {split.support[0]}: the heart parts")

# %% [markdown]
# ## 2. Three ways to learn a new structure
#
# * **decoder + head** (`linear_probe` with `decoder="fine-tuned"`): new head rows, the conv decoder
#   (`encoder1-4`, `encoder10`, `decoder5-1`) trained from its pre-trained weights, the Swin encoder frozen.
# * **full fine-tuning** (`full_ft`): every weight, from the foundation model.
# * **scratch** (`scratch`): the same network from a fresh initialisation, no foundation model.
#
# Any PEFT method of notebooks 04-06 can be combined with the decoder option
# (`run(..., "lora", k, seed, RunOptions(decoder="fine-tuned"))`): the paper's best novel-structure results.

# %%
print(inspect.getsource(scratch.apply))

# %%
# NBVAL_CHECK_OUTPUT
options = {"decoder + head": ("linear_probe", "fine-tuned"), "full fine-tuning": ("full_ft", "frozen"),
           "scratch": ("scratch", "frozen")}
total = sum(p.numel() for p in foundation.parameters())
rows = []
for label, (method, decoder) in options.items():
    model = build(foundation, method, structures, multiclass, decoder=decoder)
    n = trainable_parameters(model)
    decoder_n = sum(p.numel() for m in DECODER_MODULES for p in getattr(model, m).parameters() if p.requires_grad)
    rows.append({"option": label, "trainable": n, "of the model": f"{n / total:.1%}", "in the decoder": decoder_n,
                 "head rows": "new"})
pd.DataFrame(rows)

# %% [markdown]
# SwinUNETR's convolutional decoder holds most of its weights, so decoder fine-tuning is not
# "parameter-efficient" by count. Its saving is elsewhere: the Swin encoder is frozen, so its output
# for a crop never changes while the decoder trains (section 4).

# %% [markdown]
# ## 3. Learning the heart
#
# Decoder + head with the encoder cache (section 4 says what it is and what it saves), for `epochs`
# epochs, scored on the test volume beside zero-shot (the new head rows predict nothing until they
# are trained). One choice departs from the
# paper: on the `cpu` profile the learning rate is 1e-3, not the paper's 1e-4 for every run that
# trains the decoder. Adam moves each weight by at most about the learning rate per step, and the
# new rows must climb from the starting logit printed below (no single weight covers that: the climb
# sums over many decoder and head weights); the `gpu` profile keeps the paper's rate.

# %%
steps = epochs * k
print(f"{steps} steps at 1e-4 move a weight by at most {steps * 1e-4:.2f}; at {lr:g}: {steps * lr:.2f}; "
      f"a new row starts at the logit {math.log(0.02 / 0.98):.1f} (p = 0.02)")

# %%
config = AdaptConfig(epochs=epochs, lr=lr)
tables, results = [], {}
for label, (method, decoder) in {"zero-shot": ("zero_shot", "frozen"), "decoder + head": ("linear_probe", "fine-tuned")}.items():
    table, result = run(foundation, ts, task, method, k, seed,
                        RunOptions(decoder=decoder, profile=P.name, config=config, test=test_ids))
    tables.append(table.assign(option=label))
    results[label] = result
table = pd.concat(tables, ignore_index=True)
trained = results["decoder + head"]
print(f"decoder + head: {trained.epochs_run} epochs in {trained.train_seconds:.0f} s, encoder cache: {trained.cached}")
table.pivot_table(index="structure", columns="option", values="dice").round(3)

# %%
# NBVAL_CHECK_OUTPUT
scores = table.groupby("option").dice.mean()
print(claim(scores, "decoder + head", "zero-shot", "the five heart parts (mean Dice)"))
learned = table[table.option == "decoder + head"].groupby("structure").dice.mean()
print(f"parts with a mean Dice of 0.3 or more: {(learned >= 0.3).sum()} of {len(learned)}")

# %%
ax = viz.plot_learning_curves({"decoder + head": trained.curve})
_ = ax.set_title(f"{task}, k = {k}, seed {seed}, lr {lr:g}")

# %%
case = load_cases(ts, [test_ids[0]], structures, G)[0]
masks = trained.test_masks[test_ids[0]]                        # (S, X, Y, Z), one mask per part, as scored
predicted = sum((i + 1) * masks[i].long() for i in range(len(structures)))
index = int(np.argwhere(case["label"][0].numpy() > 0)[:, 1].mean())   # a coronal slice through the heart
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
for ax, label, name in zip(axes, (case["label"][0], predicted), ("truth", "decoder + head")):
    viz.draw_slice(ax, case["image"][0], label, structures, "coronal", index=index, spacing=[G.spacing_mm] * 3)
    ax.set_title(f"{test_ids[0]}: {name}\n" + ax.get_title(), fontsize=9)
viz.structure_legend(fig, structures)
fig.tight_layout()

# %% [markdown]
# ## 4. The encoder cache: what a step costs
#
# `adapt` drew the support crops once into a bank, ran the frozen encoder once per crop and kept
# its five hidden states (the skip connections); each step then ran only the decoder and the head,
# forward and backward (`FoundationModel.encode` and `decode` split MONAI's `forward` in two).
# The run above logged its own seconds per epoch. Without the cache, and for full fine-tuning
# (which trains the encoder, so every step runs the whole network), two epochs each are timed
# here. Scratch trains the same network as full fine-tuning: its step costs the same. With the cache
# on, `adapt` also keeps the trained decoder in channels-last layout (faster 3x3x3 convolutions on a
# CPU), so the ratio counts both. The cached run's first epoch costs more than its later ones: it fills the bank, eight
# times a step's crops, each through the encoder.

# %%
per_epoch = trained.curve["seconds"].diff().iloc[1:]    # the first epoch also filled the cache
costs = {"decoder + head, encoder cached": {"trainable": trained.trainable, "first epoch s": round(trained.curve["seconds"].iloc[0], 1),
                                            "s per epoch": round(per_epoch.median(), 2)}}
for label, (method, decoder) in {"decoder + head, no cache": ("linear_probe", "fine-tuned"),
                                 "full fine-tuning": ("full_ft", "frozen")}.items():
    timed = adapt(foundation, method, support, multiclass=multiclass, decoder=decoder, profile=P.name,
                  config=AdaptConfig(epochs=2, feature_cache=False, stop_patience=0, validate_every=0))
    seconds = timed.curve["seconds"].to_numpy()
    costs[label] = {"trainable": timed.trainable, "first epoch s": round(seconds[0], 1),
                    "s per epoch": round(seconds[1] - seconds[0], 2)}
costs = pd.DataFrame(costs).T
speed_up = costs.loc["decoder + head, no cache", "s per epoch"] / costs.loc["decoder + head, encoder cached", "s per epoch"]
print(f"the encoder cache makes a decoder + head epoch {speed_up:.1f}x faster")
costs

# %% [markdown]
# **Reading the result.** The checked lines above say whether decoder + head learned the heart
# parts from one labelled volume, and how many of the five reach a Dice of 0.3. The cost table says
# what made it affordable on a CPU: with the encoder cached, a decoder step costs a fraction of a
# full fine-tuning step, so the same minutes buy several times more epochs. The frozen encoder's
# features already separate tissues it was never told the names of; the decoder learns to draw
# new boundaries from them, and the per-part table and the count line above show which parts it
# reached in these epochs and which it missed. In the paper (k = 10, `results/paper_reported.csv`, notebook 09),
# decoder fine-tuning with LoRA in the encoder leads full fine-tuning, decoder fine-tuning alone
# about ties it, and training from self-supervised weights instead of the foundation model trails.
#
# ## Exercises
#
# 1. Add `"lora + decoder": ("lora", "fine-tuned")` to the timing loop of section 4. Why can it not use the encoder cache
#    (the solution shows how to ask `cache_level`), and what does that cost per epoch?
# 2. Use `decoder="new"` with the linear probe: the decoder re-initialised. What does that test?
# 3. Train full fine-tuning for the same wall time as decoder + head: `epochs` times the ratio of
#    their seconds per epoch in the cost table. Which learns the heart better in that time?
#
# <details><summary>Solutions</summary>
#
# 1. LoRA trains inside the Swin encoder, so the encoder's output changes every step and cannot be
#    cached (`from fseft_lab.crop_bank import cache_level`; `cache_level(build(foundation, "lora", structures,
#    multiclass, decoder="fine-tuned"))` returns `None`): each step runs the whole network and its
#    backward reaches into the encoder, so its seconds per epoch are of the order of the two uncached rows ("decoder + head, no cache" and
#    "full fine-tuning"), not the cached row's fraction of them.
# 2. Whether the pre-trained decoder matters: with a new decoder only the encoder's features are
#    reused; compare it with decoder + head, and with `run(..., "scratch", ...)` if you train that too.
# 3. Compute `round(epochs * costs.loc["decoder + head, encoder cached", "s per epoch"] /
#    costs.loc["full fine-tuning", "s per epoch"])` and pass it as `AdaptConfig(epochs=..., lr=lr)` to
#    `run(..., "full_ft", ...)`; compare the two runs' mean Dice. Full fine-tuning gets far fewer
#    steps and moves every encoder weight on one volume's crops.
# </details>
#
# ## What you learned
# - A novel structure gets a new head row; the decoder option decides how much else may change.
# - With the encoder frozen, its outputs per crop can be cached: decoder fine-tuning then costs
#   only the decoder and head per step.
# - Training from scratch discards what pre-training learned, and needs far more data and time (the
#   paper's finding; not run here).
#
# Next: **08 · constrained transductive inference**.
