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
# # 04 · Selective PEFT: BitFit and Affine-LN
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/fseft-lab/fseft_lab/blob/main/notebooks/04_selective_peft.ipynb)
#
# <!-- run-info -->*Committed outputs: cpu profile, x86_64 with 2 CPU cores, no GPU, 204 s (executed 2026-12-07 with `fseft-lab notebooks run`).*<!-- /run-info -->
#
# Black-box adapters leave the trunk untouched. **Selective** parameter-efficient fine-tuning opens
# it, but trains only a chosen sliver of its existing weights: the **biases** of the Swin encoder
# (BitFit) or the scales and shifts of its **LayerNorms** (Affine-LN). Each is a small share of the
# trunk's weights (section 1 counts them), yet each sits inside every block, so the whole feature
# hierarchy can move.
#
# **You will learn to**
# - select parameters by role (bias, normalisation) and count where they sit in SwinUNETR;
# - see why a bias or a LayerNorm affine re-targets features to a new scanner's statistics;
# - train both on a non-contrast target and compare them with zero-shot.
#
# **References**
# - J. Silva-Rodríguez, J. Dolz, I. Ben Ayed, *Towards Foundation Models and Few-Shot Parameter-Efficient Fine-Tuning for Volumetric Organ Segmentation*, Medical Image Analysis, 2025, [link](https://github.com/fseft-lab/fseft_lab/blob/main/docs/references.md#paper): the course's source paper
# - E. Ben Zaken, S. Ravfogel, Y. Goldberg, *BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked Language-models*, ACL 2022, [link](https://github.com/fseft-lab/fseft_lab/blob/main/docs/references.md#bitfit): BitFit

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
from fseft_lab.methods import affine_ln, bitfit
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
# ## 1. BitFit: the biases
#
# Every linear layer of a Swin block computes $y = Wx + b$: the attention's `qkv` ($b \in
# \mathbb{R}^{3d}$) and `proj` ($d$), and the MLP's two layers ($4d$ and $d$), 9 d per block.
# Training only $b$ shifts each layer's output by a learned constant: it cannot rotate features, but
# it can move every pre-activation, and with it which units fire after the GELU.
# As the paper's reference code selects them (every encoder parameter named `bias` under `attn` or
# `mlp`), the attention's **relative-position bias tables** train too: one learned offset per head
# for each of the $13^3$ relative positions in a $7^3$ window, which the attention adds to its
# scores. They hold most of BitFit's parameters (210,739 at F = 48, against 13,009 for the linear
# biases alone, the paper table's "~13,000"): `relative_position_tables=False` trains the biases
# only. (Zaken et al. 2022.)

# %%
print(inspect.getsource(bitfit.apply))

# %%
# NBVAL_CHECK_OUTPUT
paper_size = FoundationModel(48)                   # the paper's SwinUNETR, F = 48
for tables in (True, False):
    n = trainable_parameters(build(paper_size, "bitfit", [task], relative_position_tables=tables))
    print(f"BitFit at F = 48, relative-position tables {'trained' if tables else 'frozen'}: {n:,} trainable")

# %% [markdown]
# ## 2. Affine-LN: the normalisation's scale and shift
#
# Each block normalises its tokens twice, $\mathrm{LN}(x) = \gamma \odot \frac{x - \mu}{\sigma} + \beta$.
# A new scanner changes the statistics that reach each block; re-learning $\gamma$ and $\beta$
# (2 d per LayerNorm) rescales and recentres them per channel, much like re-estimating
# batch-norm statistics on a new domain.

# %%
print(inspect.getsource(affine_ln.apply))


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
    for method in ['bitfit', 'affine_ln']:
        model = build(base, method, [task])
        n = trainable_parameters(model)
        rows.append({"feature size": width, "method": method, "trainable": n, "of the model": f"{n / total:.3%}", **where(model)})
pd.DataFrame(rows)

# %% [markdown]
# ## 3. Training on the target
#
# Unlike the adapters of notebook 03, these methods change the trunk, so there is no feature cache:
# each step runs SwinUNETR forward and backward. On 2 CPU cores that limits the `cpu` profile to a
# few epochs (`epochs`); on a GPU the profile's full schedule runs. Learning rate 1e-2 for both
# (the paper's).

# %%
tables, results = [], {}
for method in ["zero_shot"] + ['bitfit', 'affine_ln']:
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
for method in ['bitfit', 'affine_ln']:
    print(claim(scores, method, "zero_shot", f"the {task}, non-contrast target, k = {k} (mean Dice)"))

# %%
ax = viz.plot_learning_curves({m: results[m].curve for m in ['bitfit', 'affine_ln']})
_ = ax.set_title(f"{task}, k = {k}, seed {seed}")

# %%
case = load_cases(flare, [test_ids[0]], [task], G)[0]
masks = {m: r.test_masks[test_ids[0]][0] for m, r in results.items()}
_ = viz.compare_figure(case["image"][0], case["label"][0] == 1, masks, task, spacing=[G.spacing_mm] * 3)

# %% [markdown]
# **Reading the result.** The checked lines say whether each method beat zero-shot on this
# target, and by how much: the non-contrast scanner is where the foundation model is weakest (the lowest score in most columns of notebook 01's zero-shot table), and a
# few epochs of tuning a sliver of the trunk's own weights to one labelled volume already move the
# organ's Dice. The learning curves show whether the epochs were enough; on the `gpu` profile
# (more epochs) the comparison with the adapters of notebook 03 is the interesting one. The
# paper's journal version reports the black-box spatial adapter (notebook 03) as the best method
# for base organs at k = 1, with BitFit and Affine-LN among the PEFT methods it compares; notebook
# 09 puts every method side by side on the phantom benchmark, at k = 1, 5 and 10 and over three
# draws instead of this single one, and says how far the paper's findings hold there.
#
# **BitFit's parameter count.** On the cpu-profile model BitFit trains far more parameters than
# Affine-LN (the `trainable` column above), for about the same Dice on this draw. Almost all of
# them are the relative-position bias tables (section 1), not the linear biases: a table's size is
# set by the attention window and the number of heads, not by the feature size F, while the biases
# and the LayerNorms scale with F. So at the small F of the cpu model the tables weigh even more
# than at F = 48: compare BitFit's share of the model at the two feature sizes in the table. The
# paper table's BitFit count is the linear biases alone (section 1), which
# `relative_position_tables=False` trains; notebook 09's benchmark ran that biases-only BitFit (its
# `trainable` column). On one draw, two test volumes and a few epochs, the extra table parameters
# buy no Dice that this notebook can measure; whether they ever do is exercise 4.
#
# ## Exercises
#
# 1. Count the biases per stage for F = 48: why do the last stage's blocks hold most of them?
# 2. Train BitFit with `epochs=20`. Does the learning curve flatten before the early-stopping rule
#    could fire (it checks from epoch 31)?
# 3. Combine both: what would you change in `bitfit.apply` to also unfreeze the LayerNorms?
# 4. Train BitFit without the relative-position tables, `run(foundation, flare, task, "bitfit", k,
#    seed, options, relative_position_tables=False)`, on two or three draws (`seed`). Do the tables'
#    extra parameters buy any Dice here?
#
# <details><summary>Solutions</summary>
#
# 1. A block of width d has 9 d biases and the stages have widths F, 2F, 4F, 8F: the last stage
#    holds 8/15 of them.
# 2. The curve usually still falls at epoch 20 on the `cpu` profile; the rule never fires before
#    epoch 31, so all 20 epochs run.
# 3. Add `for _, norm in swin_modules(model, nn.LayerNorm): norm.requires_grad_(True)` before
#    returning, as `affine_ln.apply` does, and register it under a new name.
# 4. Compare the printed Dice, draw by draw, with and without the tables, and judge the difference
#    against the spread between draws of the same variant: only a difference that keeps its sign
#    across draws says something. The biases-only BitFit trains a small fraction of the parameters
#    (the `trainable` column), so if the Dice does not move, the tables cost parameters for nothing.
# </details>
#
# ## What you learned
# - Selective PEFT trains existing weights chosen by role: biases, or normalisation affines.
# - A small share of the weights, chosen by role, reaches every block of the trunk, which adapters
#   at the head cannot.
# - Opening the trunk costs a full forward and backward per step: no feature cache.
#
# Next: **05 · LoRA**, low-rank updates of the attention weights themselves.
