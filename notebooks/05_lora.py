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
# # 05 · LoRA: low-rank updates of the attention weights
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/fseft-lab/fseft_lab/blob/main/notebooks/05_lora.ipynb)
#
# <!-- run-info -->*Committed outputs: cpu profile, x86_64 with 2 CPU cores, no GPU, 138 s (executed 2026-12-07 with `fseft-lab notebooks run`).*<!-- /run-info -->
#
# LoRA (Hu et al. 2022) keeps every pre-trained weight matrix $W$ frozen and learns a low-rank
# correction beside it, $W + \frac{\alpha}{r} BA$. In SwinUNETR it sits on each attention block's
# `qkv` projection, the matrix that decides what each window attends to. With rank 4 that is about a
# thousandth of the model at the paper's size, and a few thousandths of the smaller cpu-profile model
# (section 1's table prints both counts and shares). This is LoRA with the rest of the network
# frozen; where the decoder trains too (notebook 07), the decoder's weights dominate the count. The
# update can be merged into $W$ after training, so inference costs nothing extra.
#
# **You will learn to**
# - write a LoRA layer that starts as an exact copy of the frozen layer;
# - see how rank trades parameters for capacity;
# - train LoRA on the non-contrast target and compare it with zero-shot.
#
# **References**
# - J. Silva-Rodríguez, J. Dolz, I. Ben Ayed, *Towards Foundation Models and Few-Shot Parameter-Efficient Fine-Tuning for Volumetric Organ Segmentation*, Medical Image Analysis, 2025, [link](https://github.com/fseft-lab/fseft_lab/blob/main/docs/references.md#paper): the course's source paper
# - E. J. Hu et al., *LoRA: Low-Rank Adaptation of Large Language Models*, ICLR 2022, [link](https://github.com/fseft-lab/fseft_lab/blob/main/docs/references.md#lora): LoRA
# - ARENA, the source paper's follow-up, [link](https://github.com/fseft-lab/fseft_lab/blob/main/docs/references.md#arena): adaptive-rank LoRA

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
task = "spleen"                                     # a base organ (binary task)
epochs = None                                       # None: 12 on the cpu profile, else the profile's
num_test = 2                                        # test volumes scored
data_dir = "../data"
results_dir = None                                  # None: the course's committed results/ (clone or installed package)

# %%
import inspect
import warnings
warnings.filterwarnings("ignore")
from pathlib import Path

import matplotlib.pyplot as plt
import monai
import pandas as pd
import torch

from fseft_lab import viz
from fseft_lab.adapt import AdaptConfig
from fseft_lab.data.layouts import export_phantom
from fseft_lab.experiments import RunOptions, claim, load_cases, run, split_for
from fseft_lab.methods import build, trainable_parameters
from fseft_lab.models.foundation import FoundationModel
from fseft_lab.models.zoo import load_foundation
from fseft_lab.profiles import get_profile
from fseft_lab.methods import lora
from fseft_lab.models.zoo import checkpoint_geometry

P = get_profile(profile)                # budgets: epochs, crops, subjects
G = checkpoint_geometry("phantom_cpu")  # the course model's voxel size and patch: data is made and read at them
epochs = epochs or (12 if P.name == "cpu" else None)  # trunk-training epochs cost seconds each on a CPU
torch.manual_seed(seed)
monai.utils.set_determinism(seed)
plt.rcParams["figure.dpi"] = 100
pd.set_option("display.width", 120)
print(f"torch {torch.__version__} | monai {monai.__version__} | cuda {torch.cuda.is_available()} | profile {P.name} | model: {G}")

# %% [markdown]
# ## The target: a non-contrast scanner
#
# These methods change the trunk itself, so we take them where zero-shot transfer is weakest
# (the lowest score in most columns of notebook 01's zero-shot table, the spleen's among them): the
# FLARE-like phantom target, a plain (non-contrast) CT whose organs are closer in HU to their
# neighbours than in the contrast-enhanced sources (notebook 00). Same protocol as before: k support
# volumes, a validation volume, fixed test volumes.

# %%
flare = export_phantom(Path(data_dir) / f"flare_like_{P.name}", "msd", cases=6, seed=seed + 1, spacing=G.spacing_mm,
                       num_test=2, overwrite=True)
split = split_for(flare, task, k, seed)  # support volumes show the organ whole; test volumes show it
test_ids = list(split.test[:num_test])
foundation = load_foundation("phantom_cpu")
trunk_cache = {}
print(f"support {split.support} | validation {split.validation} | test {test_ids}")

# %% [markdown]
# ## 1. The LoRA layer
#
# For a frozen linear map $W \in \mathbb{R}^{3d \times d}$ (queries, keys and values of $d$-wide
# tokens) LoRA adds
#
# $$\mathrm{qkv}(x) = Wx + \frac{\alpha}{r} B A x, \qquad A \in \mathbb{R}^{3r \times d},\ B \in \mathbb{R}^{3d \times 3r},$$
#
# with $A$ random and $B = 0$ at the start, so the adapted model equals the foundation model at
# step 0, and the update $BA$ has rank at most $3r$. The paper's code gives queries, keys and values
# rank $r$ each (A maps $d \to 3r$).

# %%
print(inspect.getsource(lora.LoRALinear))

# %%
# NBVAL_CHECK_OUTPUT
rank_rows = []
for rank in (1, 2, 4, 8, 16):
    model = build(FoundationModel(48), "lora", [task], rank=rank)
    rank_rows.append({"rank r": rank, "trainable (F = 48)": trainable_parameters(model)})
pd.DataFrame(rank_rows)


# %% [markdown]
# Parameters grow linearly with $r$: $12rd$ per block ($A$: $3r \times d$, $B$: $3d \times 3r$), plus
# the head. Where they sit, next to the methods of notebook 04:

# %%
# NBVAL_CHECK_OUTPUT
def where(model):
    """Trainable parameters by part of the network."""
    counts = {"Swin blocks": 0, "patch embed/merging": 0, "conv decoder": 0, "head": 0}
    for name, p in model.named_parameters():
        if p.requires_grad:
            part = ("head" if name.startswith("classifier") else "Swin blocks" if ".blocks." in name
                    else "patch embed/merging" if name.startswith("swinViT") else "conv decoder")
            counts[part] += p.numel()
    return counts

rows = []
for width in sorted({P.geometry.feature_size, 48}):
    base = FoundationModel(width)
    total = sum(p.numel() for p in base.parameters())
    for method in ['bitfit', 'affine_ln', 'lora']:
        model = build(base, method, [task])
        n = trainable_parameters(model)
        rows.append({"feature size": width, "method": method, "trainable": n, "of the model": f"{n / total:.3%}", **where(model)})
pd.DataFrame(rows)

# %% [markdown]
# ## 2. Training on the target
#
# The paper trains LoRA at a learning rate of 1e-3 (ten times lower than BitFit's): the update
# multiplies activations, so large steps on $B$ quickly move every attention map.

# %%
tables, results = [], {}
for method in ["zero_shot"] + ['lora']:
    options = RunOptions(profile=P.name, config=AdaptConfig(epochs=epochs), trunk_cache=trunk_cache, test=test_ids)
    table, result = run(foundation, flare, task, method, k, seed, options)
    tables.append(table)
    results[method] = result
table = pd.concat(tables, ignore_index=True)
table.groupby("method", sort=False).agg(dice=("dice", "mean"), hd95_mm=("hd95", "mean"), missed=("missed", "sum"), trainable=("trainable_params", "first"),
                                        epochs=("epochs", "first"), train_seconds=("train_seconds", "first")).round(3)

# %%
# NBVAL_CHECK_OUTPUT
scores = table.groupby("method").dice.mean()
for method in ['lora']:
    print(claim(scores, method, "zero_shot", f"the {task}, non-contrast target, k = {k} (mean Dice)"))

# %%
ax = viz.plot_learning_curves({m: results[m].curve for m in ['lora']})
_ = ax.set_title(f"{task}, k = {k}, seed {seed}")

# %%
case = load_cases(flare, [test_ids[0]], [task], G)[0]
masks = {m: r.test_masks[test_ids[0]][0] for m, r in results.items()}
_ = viz.compare_figure(case["image"][0], case["label"][0] == 1, masks, task, spacing=[G.spacing_mm] * 3)

# %% [markdown]
# **Merging.** After training, $W' = W + \frac{\alpha}{r}BA$ is one matrix of the original size:
# the adapted model is exactly as fast as the foundation model, and the adapter file stores only
# the trained tensors ($A$, $B$ and the task head): four bytes per trainable parameter of the table above.
#
# **Reading the result.** The checked line says whether LoRA beat zero-shot on the non-contrast
# target, with both Dice values; the learning curve shows whether the CPU's epochs were enough, and
# the `gpu` profile runs the full schedule. In the paper's journal version LoRA, with the decoder
# fine-tuned (notebook 07), leads the methods for novel structures; for base organs at k = 1 the
# journal reports the spatial adapter as the best. Notebook 09 tests both on the phantom.

# %% [markdown]
# ## 3. Beyond the paper: adaptive-rank LoRA
#
# Which rank? Too low and the update cannot express the task, too high and one support volume
# over-fits it, and the best rank may differ between the first Swin stage and the last. The
# paper's follow-up (ARENA) lets each layer choose: write the update as a sum of rank-one terms
# with their own scales,
#
# $$\mathrm{qkv}(x) = Wx + \frac{\alpha}{r} P\,\mathrm{diag}(s)\,Q x = Wx + \frac{\alpha}{r}\sum_{i=1}^{3r} s_i\, p_i q_i^\top x,$$
#
# add an L1 penalty $\lambda \lVert s \rVert_1$, and handle it with its **proximal step** after each
# optimiser step, soft-thresholding:
# $s_i \leftarrow \mathrm{sign}(s_i) \max(|s_i| - \eta\lambda, 0)$ ($\eta$ the learning rate). A component whose
# gradient does not keep pushing it one way is set to exactly zero; the layer's rank is the number
# of non-zero $s_i$. $s$ starts at zero, so the model starts equal to the foundation model.

# %%
from fseft_lab.methods import adaptive_lora
print(inspect.getsource(adaptive_lora.AdaptiveLoRALinear.proximal))

# %% [markdown]
# **Does it find the right rank?** A toy first: a frozen layer whose target is the layer plus a
# known rank-2 update. Adaptive LoRA starts with 3r = 24 components; we follow how many survive.

# %%
torch.manual_seed(0)
d = 16
base = torch.nn.Linear(d, 3 * d).requires_grad_(False)
delta = torch.randn(3 * d, 2) @ torch.randn(2, d) / d ** 0.5          # the true update: rank 2
fig, ax = plt.subplots(figsize=(5.5, 3.2))
for l1 in (0.0, 0.2, 0.5):
    torch.manual_seed(1)
    layer = adaptive_lora.AdaptiveLoRALinear(base, rank=8, alpha=8.0, l1=l1)
    optimizer = torch.optim.Adam([layer.lora_Q.weight, layer.lora_s, layer.lora_P.weight], lr=1e-2)
    ranks = []
    for step in range(400):
        x = torch.randn(64, d)
        loss = (layer(x) - (base(x) + x @ delta.T)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        layer.proximal(lr=1e-2)
        ranks.append(layer.rank())
    ax.plot(ranks, label=f"lambda = {l1}: rank {ranks[-1]}, error {loss.item():.4f}")
ax.axhline(2, color="0.5", ls=":")
_ = ax.set(xlabel="step", ylabel="non-zero components", title="recovering a rank-2 update", ylim=(0, 26))
_ = ax.legend(fontsize=8, frameon=False)

# %% [markdown]
# Without the penalty all 24 components stay; with $\lambda = 0.5$ the layer ends with exactly the
# two it needs and the same error. With Adam each step moves $s_i$ by about $\eta$ whatever its
# gradient's size, so $\lambda$ is a fraction: components whose gradient sign is consistent grow at
# $\eta(1 - \lambda)$ per step, the others are pulled to zero.
#
# **On the model.** `benchmarks/adaptive_lora.py` trains LoRA (rank 4) and adaptive-rank LoRA
# (up to rank 8, $\lambda = 0.5$) on a novel structure with the decoder fine-tuned (notebook 07's
# set-up) on the same draws, and commits the Dice and the learned ranks per layer. The committed
# cpu run is small (the first line below prints its draws and epochs), and the second line says
# whether it ran on the model shipped with this course (`results/adaptive_lora.json` records the
# model's checksum). Where it did not, or where neither method has learned the lobe yet, read the
# ranks, not the Dice. We read them:

# %%
import json

from fseft_lab.course_files import course_path
from fseft_lab.models import zoo
results_file = (Path(results_dir) if results_dir else course_path("results")) / "adaptive_lora.csv"
if not results_file.is_file():
    print(f"{results_file} is missing: run `python benchmarks/adaptive_lora.py` from the repository root")
else:
    from fseft_lab.experiments import summary
    bench = pd.read_csv(results_file)
    print(bench.task.iloc[0], "| k =", bench.k.iloc[0], "| decoder", bench.decoder.iloc[0], "|",
          bench.seed.nunique(), "draw(s), epochs:", ", ".join(str(e) for e in sorted(bench.epochs.unique())))
    made_with = json.loads(results_file.with_suffix(".json").read_text())["checkpoint_sha256"]
    print(f"foundation model sha256 {made_with[:12]}...; the one shipped with this course: "
          f"{made_with == zoo.manifest('phantom_cpu')['sha256']}")
    display(summary(bench).round(3))
    ranks = pd.read_csv(results_file.with_name("adaptive_lora_ranks.csv"))
    ax = ranks.pivot(index="layer", columns="seed", values="rank").plot.bar(figsize=(8, 3))
    ax.axhline(ranks.max_rank.iloc[0], color="0.5", ls=":", label="initial rank")
    _ = ax.set(ylabel="learned rank (non-zero s)", title="adaptive-rank LoRA: rank per attention block")

# %% [markdown]
# **Reading it.** The `params` column counts everything that trained in these runs, not LoRA
# alone: with the decoder fine-tuned (notebook 07's set-up) the whole convolutional decoder and the
# head train beside the LoRA matrices, and the decoder is almost all of the count. LoRA's own share
# on the cpu-profile model is the `lora` row of section 1's table (there with the decoder frozen),
# which is what the introduction's "thousandth" (at the paper's size) refers to. Adaptive LoRA's
# count is higher because it starts at twice the rank, and it counts every component, pruned or not.
# The ranks say which attention blocks the task wanted to change; compare the
# Dice with LoRA's against the spread across draws before calling either better. The effective
# parameter count is the sum over layers of rank x (4d + 1): a pruned component's $p_i$ and
# $q_i$ can be dropped after training.
#
# ## Exercises
#
# 1. Merge a trained `LoRALinear` into a plain `nn.Linear` and check both give the same output.
# 2. Train with `rank=1` (pass `rank=1` to `run`). How much Dice do 4x fewer parameters cost here?
# 3. Why must $B$, not $A$, start at zero? What happens if both do?
# 4. In the toy, set $\lambda = 1$. Why does the rank fall to zero first and then recover?
#
# <details><summary>Solutions</summary>
#
# 1. `merged = nn.Linear(d, 3 * d); merged.weight.data = layer.base_layer.weight + layer.scaling *
#    layer.lora_B.weight @ layer.lora_A.weight; merged.bias.data = layer.base_layer.bias`, then
#    `torch.allclose(merged(x), layer(x), atol=1e-6)`.
# 2. Compare the two Dice values; at k = 1 the difference is usually within the spread across seeds.
# 3. $B = 0$ makes the update zero while $A$'s random directions give $B$ a non-zero gradient. With
#    both at zero, both gradients are zero and training never starts.
# 4. The threshold $\eta\lambda$ then equals Adam's typical step, so no component can grow in the
#    first steps; once Adam's moment estimates favour a few directions their steps exceed the
#    threshold and they come back.
# </details>
#
# ## What you learned
# - LoRA learns a rank-r correction to frozen attention weights, zero at the start.
# - Its cost grows linearly with r; after training it merges into the weights for free.
# - Adaptive-rank LoRA writes the update as $P\,\mathrm{diag}(s)\,Q$ and soft-thresholds $s$, so
#   each layer keeps the rank its task needs.
#
# Next: **06 · AdaptFormer and Compacter**, adapters inside the transformer blocks.
