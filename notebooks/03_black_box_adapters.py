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
# # 03 · Black-box spatial adapters and the feature cache
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/fseft-lab/fseft_lab/blob/main/notebooks/03_black_box_adapters.ipynb)
#
# <!-- run-info -->*Committed outputs: cpu profile, x86_64 with 2 CPU cores, no GPU, 150 s (executed 2026-12-07 with `fseft-lab notebooks run`).*<!-- /run-info -->
#
# A hospital may receive a foundation model it cannot open: only its output features. The paper's
# **black-box adapters** work in exactly that setting. A small residual network sits between the
# frozen trunk's features and the head, per voxel (1x1x1) or seeing each voxel's neighbourhood
# (3x3x3, the **spatial adapter**, the paper's recommended method for base organs at low k).
# Because the trunk never changes, its features can be computed once and reused: the **feature
# cache** that makes these methods fast enough to train on a laptop.
#
# **You will learn to**
# - write a zero-initialised residual adapter and count its parameters;
# - cache trunk features and check that the cached trainer gives the same weights (up to float rounding), many times faster;
# - compare zero-shot, 1x1x1 and 3x3x3 adapters on the same few-shot split.
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
task = "pancreas"                                   # a base organ (binary task)
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
from fseft_lab.adapt import AdaptConfig, adapt
from fseft_lab.data.layouts import export_phantom
from fseft_lab.experiments import RunOptions, claim, load_cases, run, split_for
from fseft_lab.methods import black_box_adapter, build, trainable_parameters
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

# %%
ts = export_phantom(Path(data_dir) / f"totalseg_like_{P.name}", "totalsegmentator", cases=P.target_cases,
                    seed=seed, spacing=G.spacing_mm, overwrite=True)
split = split_for(ts, task, k, seed)  # support volumes show the organ whole; test volumes show it
test_ids = list(split.test[:num_test])
foundation = load_foundation("phantom_cpu")
trunk_cache = {}  # trunk features of the test volumes, shared by every frozen-trunk method below
print(f"support {split.support} | validation {split.validation} | test {test_ids}")

# %% [markdown]
# ## 1. A residual adapter on the features
#
# With trunk features $f \in \mathbb{R}^{F \times X \times Y \times Z}$ the adapter computes
#
# $$z = f + W_\text{up} * \mathrm{ReLU}(W_\text{down} * f), \qquad \text{logits} = \text{head}(z),$$
#
# with $F \to F$ convolutions without bias, of size 1x1x1 ($2F^2$ weights) or 3x3x3 ($54F^2$).
# $W_\text{up}$ starts at zero, so at step 0 the adapted model **is** the zero-shot model and
# training can only move away from it as far as the support volume asks. The code:

# %%
print(inspect.getsource(black_box_adapter.ResidualAdapter))

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for width in sorted({P.geometry.feature_size, 48}):
    base = FoundationModel(width)
    total = sum(p.numel() for p in base.parameters())
    for method in ("linear_probe", "adapter_1x1", "spatial_adapter"):
        n = trainable_parameters(build(base, method, ["pancreas"]))
        rows.append({"feature size": width, "method": method, "trainable": n, "of the model": f"{n / total:.3%}"})
pd.DataFrame(rows)

# %% [markdown]
# ## 2. The feature cache
#
# Training a frozen-trunk method the plain way runs the whole SwinUNETR forward on every crop of
# every step, only to train a few thousand weights at the end. The cache draws a **bank** of crops
# per support volume once (`crop_bank`; by default `8 * crops_per_volume` crops, see `AdaptConfig`),
# runs the trunk once per crop, and trains on the stored features; each epoch picks its crops from
# the bank. Same crops, same computation, so the same weights up to float rounding (the cell prints
# the largest difference, next to the learning rate it is small against): let us check that and
# time both paths for 3 epochs. To keep the uncached path short, the cell passes a smaller bank,
# `crop_bank=2 * P.crops_per_volume`, to both paths; the runs in section 3 use the default bank.

# %%
support = load_cases(ts, split.support, [task], G)
timing, weights, losses = {}, {}, {}
for cached in (False, True):
    config = AdaptConfig(epochs=3, crop_bank=2 * P.crops_per_volume, feature_cache=cached, validate_every=0)
    result = adapt(foundation, "spatial_adapter", support, config=config, profile=P.name)
    timing["cached" if cached else "uncached"] = result.curve.seconds.diff().iloc[1:].mean()
    weights[cached], losses[cached] = result.model.classifier.state_dict(), [round(v, 4) for v in result.curve.loss]
differ = max((weights[True][n] - weights[False][n]).abs().max().item() for n in weights[True])
print(f"loss per epoch, uncached {losses[False]}, cached {losses[True]}")
print(f"largest weight difference {differ:.1e} (learning rate {result.lr:.0e})")
print(f"seconds per epoch: uncached {timing['uncached']:.2f}, cached {timing['cached']:.3f} "
      f"-> {timing['uncached'] / timing['cached']:.0f}x faster")

# %% [markdown]
# `benchmarks/feature_cache.py` measures the same ratio for the linear probe, the spatial adapter
# and decoder fine-tuning: run `python benchmarks/feature_cache.py --profile cpu` to get the figures
# on your own machine (notebook 09 shows what each method's runs cost on the benchmark grid). The
# cost moves to the start: the bank's trunk passes. With epochs nearly free, the cached trainer
# allows the paper's full budget of 200 epochs (`Profile.cached_epochs`) even on a laptop. That is
# a maximum, not what every run trains: the learning curves below stop well before it, because
# the early-stopping rule (the paper's, on the moving average of the *training* Dice loss; no
# validation volume is used here) ended both runs once that average stopped improving. The 1x1x1
# adapter's loss barely moves, so the rule ends it soon after the first epoch at which it may act
# (`AdaptConfig.stop_start`); the spatial adapter's loss keeps falling for longer, and it trains
# more epochs (each curve's last epoch).
#
# ## 3. Adapters on the few-shot task

# %%
tables, results = [], {}
for method in ("zero_shot", "adapter_1x1", "spatial_adapter"):
    table, result = run(foundation, ts, task, method, k, seed,
                        RunOptions(profile=P.name, trunk_cache=trunk_cache, test=test_ids))
    tables.append(table)
    results[method] = result
table = pd.concat(tables, ignore_index=True)
table.groupby("method", sort=False).agg(dice=("dice", "mean"), hd95_mm=("hd95", "mean"), missed=("missed", "sum"), trainable=("trainable_params", "first"),
                                        epochs=("epochs", "first"), train_seconds=("train_seconds", "first")).round(3)

# %%
# NBVAL_CHECK_OUTPUT
scores = table.groupby("method").dice.mean()
for method in ("adapter_1x1", "spatial_adapter"):
    print(claim(scores, method, "zero_shot", f"the {task}, k = {k}"))
print(claim(scores, "spatial_adapter", "adapter_1x1", f"the {task}, k = {k}"))

# %% [markdown]
# `hd95_mm` is the 95th-percentile Hausdorff distance: the 95th percentile of the distances (mm)
# between the predicted and the true surface, so it grows with any island of voxels far from the
# organ, which the Dice barely notices (the masks keep each organ's largest connected component
# before scoring, notebook 02). `missed` counts the test volumes where a method predicted nothing
# at all: Dice 0, and an HD95 capped at the volume's diagonal (there is no surface to measure),
# so the mean HD95 counts the failure instead of dropping it.

# %%
ax = viz.plot_learning_curves({m: results[m].curve for m in ("adapter_1x1", "spatial_adapter")})
_ = ax.set_title(f"{task}, k = {k}, seed {seed}")

# %%
case = load_cases(ts, [test_ids[0]], [task], G)[0]
masks = {m: results[m].test_masks[test_ids[0]][0] for m in results}   # as scored
_ = viz.compare_figure(case["image"][0], case["label"][0] == 1, masks, task, spacing=[G.spacing_mm] * 3)

# %% [markdown]
# The two paths agree. The cached path stores the features in another memory layout (channels
# last, in which 3x3x3 convolutions run faster on a CPU), so sums run in another order and the
# weights differ by float rounding, which Adam can enlarge: its step is about $\pm$ lr wherever a
# gradient is nearly zero, whatever that gradient's last digits.
#
# **Reading the result.** The spatial adapter has the capacity to reshape the features locally
# (a 3x3x3 neighbourhood at every voxel), and the paper's journal version reports it as the best
# method for base organs at k = 1 (notebook 09 sets every method side by side on the phantom).
# At the paper's learning rate of 1e-4 an adapter moves slowly from its zero-initialised start: with one support volume and two crops per
# step the training loss stays noisy, how far it falls differs by adapter (the learning curves show it), and the early-stopping rule (a 10-epoch moving
# average that must keep improving over 20 epochs) can end training early. The checked lines above
# say how far each adapter got from zero-shot in that time; `k`, the number of crops per volume and
# the learning rate are the levers to try (exercise 1).
#
# ## Exercises
#
# 1. Train the spatial adapter with `config=AdaptConfig(lr=1e-3)` and then `1e-2` (the rate the
#    reference code uses with transductive inference, notebook 08). What happens to the curve?
# 2. Time a cached epoch against the cache's build time. After how many epochs has the cache paid off?
# 3. The cache stores `crop_bank x F x P^3` floats per volume. How much memory is that for the
#    paper's configuration (F = 48, 96^3, 6 crops per volume, bank of 48) and k = 10?
#
# <details><summary>Solutions</summary>
#
# 1. A larger rate moves the zero-initialised $W_\text{up}$ faster: the loss falls sooner and the
#    early-stopping rule may end training earlier. Run the cell above at 1e-4, 1e-3 and 1e-2 and
#    compare the printed Dice and epochs: where the zero-shot model is already close to the truth,
#    the rate matters little, and the largest one gives a noisier loss. Watch a validation volume with `validate=True`.
# 2. The build runs the trunk once per banked crop: about as long as `crop_bank / crops` uncached
#    epochs (8 with the default bank, 2 with the smaller bank of section 2). Every later epoch
#    saves almost a whole uncached epoch, so with the default bank the cache has paid off after
#    about 8-9 epochs, before the early-stopping rule may first end training.
# 3. `48 * 48 * 96**3 * 4 / 1e9` GB per volume (48 crops of 48 channels of float32), ten times that for k = 10: at that scale keep a smaller
#    bank, store half precision, or cache per volume instead of per crop.
# </details>
#
# ## What you learned
# - A black-box adapter needs only the trunk's output; zero-initialised, it starts at zero-shot.
# - Cached features turn epochs from seconds into milliseconds without changing the result.
# - Capacity (1x1x1 vs 3x3x3) and learning rate set how far an adapter can move from zero-shot; this draw shows where it ended up.
#
# Next: **04 · selective PEFT: BitFit and Affine-LN**, which open the trunk itself.
