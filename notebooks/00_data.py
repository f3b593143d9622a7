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
# # 00 · The data: CT, a phantom body, domains and partial labels
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/fseft-lab/fseft_lab/blob/main/notebooks/00_data.ipynb)
#
# <!-- run-info -->*Committed outputs: cpu profile, x86_64 with 2 CPU cores, no GPU, 76 s (executed 2026-12-07 with `fseft-lab notebooks run`).*<!-- /run-info -->
#
# Before adapting a foundation model we need to know what it sees. This notebook tours the data of
# the whole course: what a CT volume is (Hounsfield units, voxels, orientation), the **procedural
# phantom** that stands in for real CT so that everything runs offline, the **domains** that make one
# hospital's scans look unlike another's, the **partial labels** of the pre-training datasets and the
# **universal template** of the foundation model's outputs, and how the same loaders read the
# TotalSegmentator and FLARE/MSD folder layouts, phantom or real.
#
# **You will learn to**
# - read CT intensities in HU and explain the -175..250 HU window the model uses;
# - generate phantom subjects, see how a population of them varies (and how it compares with real
#   adults), view them with label overlays, and change the acquisition domain;
# - explain partial labels and the annotation mask $w_{n,c}$;
# - export, load and pre-process datasets in real layouts, and draw few-shot splits.
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
seed = 0                                            # phantom population seed
data_dir = "../data"                                # where exported datasets go

# %%
import warnings
warnings.filterwarnings("ignore")
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats
import monai
import numpy as np
import pandas as pd
import torch

import fseft_lab
from fseft_lab import anatomy, viz
from fseft_lab.data import phantom
from fseft_lab.experiments import split_for
from fseft_lab.data.layouts import export_phantom, open_dataset
from fseft_lab.data.population import REFERENCE_VOLUMES
from fseft_lab.data.transforms import preprocess, training_crops
from fseft_lab.models.zoo import checkpoint_geometry
from fseft_lab.profiles import get_profile

P = get_profile(profile)
G = checkpoint_geometry("phantom_cpu")  # the course model's geometry: data is made at its voxel size
torch.manual_seed(seed)
monai.utils.set_determinism(seed)
pd.set_option("display.width", 120)
plt.rcParams["figure.dpi"] = 100
set_matplotlib_formats("jpeg", pil_kwargs={"quality": 85})  # noisy CT slices: JPEG is half PNG's size
print(f"torch {torch.__version__} | monai {monai.__version__} | cuda {torch.cuda.is_available()} | profile {P.name} | model geometry: {G}")

# %% [markdown]
# ## 1. CT in one paragraph
#
# A CT volume is a 3-D array of **Hounsfield units** (HU): X-ray attenuation relative to water, so
# that water is 0 HU and air -1000 HU (the phantom's `water` tissue below is body fluid, bile or urine, at 10 HU). Each voxel has a physical size (the *spacing*, in mm), and an
# **affine** matrix maps voxel indices to patient coordinates. The course works in **RAS**: +x
# towards the patient's Right, +y Anterior, +z Superior. Figures use the radiological convention:
# the patient's right is on the left of the screen.
#
# The tissues of the phantom and their HU in each contrast phase (an iodine injection makes blood
# and well-perfused organs brighter, first in arteries, then in the portal venous system):

# %%
# NBVAL_CHECK_OUTPUT
hu = pd.DataFrame(phantom.TISSUE_HU, index=phantom.PHASES).T
hu.loc[["air", "lung", "fat", "water", "muscle", "liver", "kidney", "artery", "portal", "bone", "cortical_bone"]]

# %% [markdown]
# The model never sees raw HU. Soft tissue lives in a narrow band, so the paper clips to the
# abdominal window and rescales to $[0, 1]$:
#
# $$x = \frac{\operatorname{clip}(\mathrm{HU}, -175, 250) + 175}{425}.$$
#
# Everything below -175 HU (air, lung) becomes 0, fat (-100 HU) lands near the bottom of the window,
# and everything above 250 HU (bone, the aorta in the arterial phase) becomes 1. Here is one phantom subject, its intensity histogram and the window:

# %%
volume = phantom.generate(seed, 0, "btcv_like", spacing=G.spacing_mm)
print(f"image {volume.image.shape} voxels of {volume.spacing} mm, dtype {volume.image.dtype}")
fig, ax = plt.subplots(figsize=(7, 2.5))
ax.hist(volume.image.ravel(), bins=200, range=(-1050, 1100), log=True, color="0.3")
for edge in (-175, 250):
    ax.axvline(edge, color="tab:red", ls="--")
ax.set(xlabel="HU", ylabel="voxels (log)", title="HU histogram; red: the -175..250 window")
plt.show()

# %% [markdown]
# ## 2. A phantom subject
#
# Real CT cannot be downloaded here, so the course draws its own. A phantom subject is a list of
# smooth shapes in millimetres (lobulated ellipsoids for organs, swept tubes for vessels, the bowel
# and ribs, regions bounded by the diaphragm or the body wall), with realistic sizes and positions.
# Painting the shapes one after another gives **one label per voxel**, and organs touch where later
# shapes overwrite earlier ones. Read the recipe in `fseft_lab/data/body.py` (`make_subject`); `fseft_lab/data/phantom.py` paints it on a scan's grid.

# %%
structures = volume.structures_present()
atomic = [s for s in structures if s not in anatomy.COMPOSITES]     # drop lung_right/left (unions of lobes)
label = volume.label_map({i + 1: s for i, s in enumerate(atomic)})
fig = viz.overlay_figure(volume.image, label, atomic, volume.spacing, title="subject 0, domain btcv_like")
plt.show()

# %% [markdown]
# ## 3. A population, not a patient
#
# Few-shot learning is about what one or five subjects cannot show you. If every phantom were the
# same person, one labelled volume would already show every shape the test volumes have. So each
# subject is drawn from a **population**: sex, age, body frame, subcutaneous and visceral fat, a
# size for every organ, organs removed by surgery (the gallbladder at its published rate, which
# rises with age; a kidney or the spleen at far lower rates, assumed where no population figure
# exists, so a few dozen subjects may show none: the census below counts them), the filling
# of stomach and bladder, lobulated shapes. The distributions come from published CT volumetry and
# population studies, cited in `fseft_lab/data/population.py`; they were set once from those
# papers and never adjusted toward a course result. Eight subjects of one population, coronal slices:

# %%
gallery = [phantom.make_subject(seed, i) for i in range(8)]
shown = ["liver", "spleen", "kidney_right", "kidney_left", "stomach", "gallbladder", "urinary_bladder"]
fig, axes = plt.subplots(1, 8, figsize=(13, 3.4))
for ax, s in zip(axes, gallery):
    v = phantom.render(s, "btcv_like", spacing=G.spacing_mm, fov="tap")
    y = int(np.argwhere(v.mask("liver"))[:, 1].mean()) if v.mask("liver").any() else v.atoms.shape[1] // 2
    lab = v.label_map({i + 1: n for i, n in enumerate(shown)})
    viz.draw_slice(ax, v.image, lab, shown, view="coronal", index=y, spacing=v.spacing)
    ax.set_title(f"{s.index}: {s.traits.sex}, {s.traits.age:.0f} y" + ("\nno " + ", ".join(sorted(s.traits.absent)) if s.traits.absent else ""),
                 fontsize=7)
plt.suptitle("eight subjects of population seed 0 (coronal, through the liver)", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# How much do organs vary? Below, 60 subjects measured on whole bodies (at 5 mm to keep it quick)
# beside the published adult ranges. The **coefficient of variation** (CV = SD / mean) is the
# number to read: a phantom made of one patient cloned would have CVs near 0.

# %%
population = phantom.census(seed, 60, spacing=5.0)
organs = ["liver", "spleen", "kidney_right", "pancreas", "stomach", "gallbladder", "urinary_bladder", "body"]
present = population[organs].replace(0.0, np.nan)       # an absent organ has no size
spread = pd.DataFrame({"phantom mean (mL)": present.mean(), "phantom CV": present.std() / present.mean()})
spread["reference mean (mL)"] = [REFERENCE_VOLUMES[o][0] if o in REFERENCE_VOLUMES else np.nan for o in organs]
spread["reference CV"] = [REFERENCE_VOLUMES[o][1] / REFERENCE_VOLUMES[o][0] if o in REFERENCE_VOLUMES else np.nan for o in organs]
spread.round(2)

# %%
# NBVAL_CHECK_OUTPUT
print("phantom CV:", {o: round(float(spread.loc[o, "phantom CV"]), 1) for o in organs})
print("absent:", population["absent"].str.split(", ").explode().replace("", np.nan).dropna().value_counts().to_dict(),
      f"of {len(population)} subjects")

# %%
ref = [o for o in organs if o in REFERENCE_VOLUMES]
fig, axes = plt.subplots(1, len(ref), figsize=(10, 2.8))
for ax, o in zip(axes, ref):
    mean, sd, _ = REFERENCE_VOLUMES[o]
    ax.axhspan(mean - 2 * sd, mean + 2 * sd, color="tab:green", alpha=0.15, label="published mean +- 2 SD")
    ax.axhline(mean, color="tab:green", lw=1)
    ax.scatter(np.random.default_rng(0).uniform(-0.2, 0.2, len(population)), present[o], s=9, color="0.25", label="phantom subject")
    ax.set(title=o, xticks=[], ylabel="mL", xlim=(-0.5, 0.5))
axes[0].legend(fontsize=7, loc="upper left")
plt.suptitle("organ volumes: 60 phantom subjects against published adult ranges (sources in population.py)", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# > **Phantom vs real CT: what the phantom cannot show.** Its organs are smooth, lobulated
# > ellipsoids and tubes, not real shapes: no liver segments, no renal sinus, no bowel folds, no
# > vessels inside organs. Textures are filtered noise, not tissue; there are no streaks, beam
# > hardening, metal or motion artefacts. Pathology is limited to round lesions and cysts and to
# > absent organs; there is no cirrhosis, hydronephrosis or post-operative anatomy. Its sizes follow
# > the published spreads only as far as the table above shows: the spleen's spread comes out
# > narrower than published and the liver's wider, and the pancreas and the right kidney smaller on average (the table above). Methods that
# > win on the phantom win on *this* variation; on real CT, the variation is larger and different.
# > The course says so wherever a result depends on it.
#
#

# %% [markdown]
# ## 4. Domains: one body, many scanners
#
# A **domain** is a kind of site: its contrast phase, noise, blur, native spacing, the body regions
# it scans (fields of view), its slice thicknesses, an intensity calibration, and the population it
# serves (research volunteers or routine clinical patients, who are older and more often operated
# on). Every scan draws its own acquisition from the domain's ranges. The pre-training sources
# (`*_like` after BTCV, LiTS, KiTS, AMOS, CT-ORG) are mostly contrast scans of the abdomen; the two
# targets, TotalSegmentator-like and FLARE-like, come from other scanners, protocols and patients.
# That gap is what makes zero-shot transfer imperfect and few labelled target volumes useful
# (notebooks 02-08).

# %%
# NBVAL_CHECK_OUTPUT
pd.DataFrame([vars(d) for d in phantom.DOMAINS.values()]).set_index("name")

# %%
subject = phantom.make_subject(seed, 0)
fig, axes = plt.subplots(1, len(phantom.DOMAINS), figsize=(2.3 * len(phantom.DOMAINS), 2.6))
for ax, name in zip(axes, phantom.DOMAINS):
    v = phantom.render(subject, name, spacing=G.spacing_mm, fov="abdomen")
    liver_z = int(np.argwhere(v.mask("liver"))[:, 2].mean())
    viz.draw_slice(ax, v.image, view="axial", index=liver_z, spacing=v.spacing)
    ax.set_title(f"{name}\n{phantom.DOMAINS[name].phase}", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# A TotalSegmentator-like site scans whatever the clinic asked for: the whole trunk, the thorax,
# the abdomen, the pelvis. Each scan's ends fall where the technician put them, so organs at the
# edge are **cut**, and labelled only as far as they are visible. Six scans of six subjects:

# %%
fig, axes = plt.subplots(1, 6, figsize=(12, 3.6))
for ax, i in zip(axes, range(6)):
    v = phantom.generate(seed, i, "totalseg_like", spacing=G.spacing_mm)
    lab = v.label_map({j + 1: n for j, n in enumerate(shown)})
    viz.draw_slice(ax, v.image, lab, shown, view="coronal", index=v.atoms.shape[1] // 2, spacing=v.spacing)
    ax.set_title(f"{v.scan.fov}\n{v.atoms.shape[2] * G.spacing_mm:.0f} mm, slices {v.scan.slice_mm:g} mm", fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Partial labels and the universal template
#
# The foundation model has one sigmoid output per structure of a **universal template**: the paper's
# 29 structures. No pre-training dataset labels all of them: LiTS labels the liver and its tumours,
# KiTS the kidneys and their tumours, BTCV 13 abdominal organs... For a volume $n$ of a dataset that
# does not label class $c$, the absence of a label says nothing: the organ may well be there. The
# pre-training loss therefore multiplies each class's loss by an **annotation mask**
#
# $$w_{n,c} = \begin{cases}1 & \text{if the dataset of } n \text{ labels } c\\ 0 & \text{otherwise,}\end{cases}
# \qquad \mathcal{L}_n = \frac{\sum_c w_{n,c}\,\mathcal{L}^{\text{Dice}}_{n,c}}{\sum_c w_{n,c}}.$$
#
# The matrix below is $w$ for the five source datasets (KiTS and CT-ORG label kidneys without a
# side: they are split at the image centre on loading).

# %%
sources = ["btcv", "lits", "kits", "amos", "ctorg"]
w = pd.DataFrame(0, index=sources, columns=anatomy.UNIVERSAL_TEMPLATE)
for ds in sources:
    for name in anatomy.dataset_template(ds).values():
        for s in anatomy.UNSIDED.get(name, (name,)):
            w.loc[ds, s] = 1
fig, ax = plt.subplots(figsize=(11, 2.2))
ax.imshow(w.values, cmap="Greens", aspect="auto")
ax.set_xticks(range(len(w.columns)), w.columns, rotation=90, fontsize=7)
ax.set_yticks(range(len(sources)), sources)
ax.set_title("annotation mask w: which dataset labels which template structure")
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
template = pd.DataFrame({"structure": anatomy.UNIVERSAL_TEMPLATE,
                         "labelled by": [", ".join(w.index[w[s] == 1]) or "-" for s in anatomy.UNIVERSAL_TEMPLATE],
                         "in phantom": [s in phantom.PHANTOM_STRUCTURES for s in anatomy.UNIVERSAL_TEMPLATE]})
print(template.to_string())
print({group: len(names) for group, names in anatomy.NOVEL_GROUPS.items()}, "novel structures, never labelled in pre-training")

# %% [markdown]
# ## 6. Real folder layouts
#
# Real datasets come in two layouts, and the phantom writes both, so the loaders that read the
# phantom read the real thing (notebook 10):
#
# * **TotalSegmentator**: `<case>/ct.nii.gz` and one binary mask per structure in `<case>/segmentations/`;
# * **MSD / FLARE** (also nnU-Net's): `imagesTr/`, `labelsTr/` with one integer label map per case,
#   and `dataset.json` naming the values (FLARE22: 1 liver, 2 right kidney, 3 spleen, ...).
#
# Exports are atomic (written to a temporary folder, then renamed) and reused when the same dataset
# already exists, so re-running this cell is instant (each profile has its own folder; `overwrite=True` replaces a folder that holds another dataset, e.g. one an older phantom generator wrote).

# %%
ts = export_phantom(Path(data_dir) / f"totalseg_like_{P.name}", "totalsegmentator", cases=P.target_cases,
                    seed=seed, spacing=G.spacing_mm, overwrite=True)
flare = export_phantom(Path(data_dir) / f"flare_like_{P.name}", "msd", cases=6, seed=seed + 1, spacing=G.spacing_mm,
                       num_test=2, overwrite=True)
first = ts.cases[0]
print(first.case_id, "/", first.image.name, "+", len(first.labels), "masks, e.g.", sorted(first.labels)[:4])
print("test cases:", ts.test_ids)
print("FLARE-like:", flare.case_ids[:2], "...", dict(list(flare.template.items())[:4]), "...")

# %% [markdown]
# `load` returns MONAI `MetaTensor`s: arrays that carry their affine. We ask for the structures
# we want; the label map's value $i$ is the $i$-th requested structure.

# %%
# NBVAL_CHECK_OUTPUT
case = ts.load(ts.cases[0], ["liver", "spleen", "kidney_left", "aorta"])
print(type(case["image"]).__name__, tuple(case["image"].shape), case["image"].dtype, "| structures:", case["structures"])

# %% [markdown]
# ## 7. Pre-processing with MONAI
#
# Every volume goes through the same chain before the model sees it: orientation RAS, resampling
# to isotropic voxels, the HU window, a crop to the body and padding to at least one patch. For
# training, random **crops** of one patch are drawn, each centred on a structure (positive) or
# anywhere (negative) with equal chance. SwinUNETR halves the resolution five times, so a patch side
# must be a multiple of 32. A scan little larger than a patch leaves a crop little room to move:
# two crops can then be the very same voxels (the line above the figure counts the distinct ones).

# %%
chain = preprocess(G.spacing_mm, G.patch_size)
ready = chain(case)
print("before:", tuple(case["image"].shape[1:]), "after:", tuple(ready["image"].shape[1:]),
      "| intensity range", float(ready["image"].min()), "..", float(ready["image"].max()))
crops = training_crops(G.patch_size, num_samples=4, pos=1, neg=1)(ready)
distinct = {crop["image"].numpy().tobytes() for crop in crops}
print(f"{len(distinct)} distinct crops of {len(crops)}; the volume is {tuple(ready['image'].shape[1:])}, a patch {G.patch_size}^3")
fig, axes = plt.subplots(1, 4, figsize=(10, 2.6))
for i, (ax, crop) in enumerate(zip(axes, crops), start=1):
    viz.draw_slice(ax, crop["image"], crop["label"], case["structures"], "coronal", crop["image"].shape[2] // 2)
    ax.set_title(f"crop {i}", fontsize=8)
shown = np.concatenate([np.asarray(crop["label"])[0, :, crop["label"].shape[2] // 2].ravel() for crop in crops])
viz.structure_legend(fig, case["structures"], label=shown)   # the structures these slices show
fig.subplots_adjust(right=0.8)
plt.suptitle(f"four random {G.patch_size}^3 training crops (coronal middle slice)", fontsize=9)
plt.show()

# %% [markdown]
# ## 8. Few-shot splits
#
# The protocol fixes the test cases of a task, then each draw (a "seed") takes $k$ support volumes and
# one validation volume from the rest, among the scans that show the task's organ whole (notebook 02
# says why). Three seeds give three different support sets: results are averaged over them. The
# liver is the task here.

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for k in (1, 5):
    for s in range(3):
        split = split_for(ts, "liver", k, seed=s)   # support volumes show the liver whole (notebook 02)
        rows.append({"k": k, "seed": s, "support": " ".join(split.support), "validation": " ".join(split.validation)})
pd.DataFrame(rows)

# %% [markdown]
# ## 9. Looking around
#
# `viz.show` opens an interactive slice viewer: view, slice, window level/width, overlay opacity
# and the structures to overlay, with their names beside the image. Run the cell and drag its
# sliders. The figure saved with this notebook is what `viz.show` draws where no browser is
# attached (the course's runner, nbval, a script): the same overlays as a static three-view figure.

# %%
names = ["liver", "spleen", "kidney_right", "kidney_left", "stomach", "pancreas", "aorta", "heart_myocardium",
         "heart_ventricle_left", "lung_upper_lobe_right", "lung_lower_lobe_right", "gluteus_maximus_left"]
case = chain(ts.load(ts.cases[1], names))
_ = viz.show(case["image"], case["label"], names, spacing=(G.spacing_mm,) * 3, title="TotalSegmentator-like case s0001")

# %% [markdown]
# `viz.show3d` opens the same case in 3-D: axial, coronal and sagittal slices beside a volume
# rendering. Click a slice to move the crosshair, scroll to step through slices, drag the rendering
# to turn it. As in every view of the course, the patient's right is on the screen's left
# (radiological convention) and each structure has its colour; the legend names them. The viewer
# is [ipyniivue](https://github.com/niivue/ipyniivue), whose JavaScript comes with the Python
# package, so it works offline in JupyterLab, Notebook 7, VS Code and Colab. Without a browser
# (as when this notebook's saved outputs were made) it prints one line and draws nothing.

# %%
viewer = viz.show3d(case["image"], case["label"], names, spacing=(G.spacing_mm,) * 3)

# %% [markdown]
# ## Exercises
#
# 1. Render subject 3 in `flare_like` and in `btcv_like` and compare the liver's mean HU in each. Which
#    domain parameters explain the difference?
# 2. Export a 3-case MSD dataset with the `amos` template and load it: which structures does it name?
# 3. Why must a TotalSegmentator-like case's masks have exactly the image's affine? Try loading a
#    mask with a shifted affine.
#
# <details><summary>Solutions</summary>
#
# 1. ```python
#    s = phantom.make_subject(0, 3)
#    hu = {d: (v := phantom.render(s, d, 3.0, fov="abdomen")).image[v.mask("liver")].mean() for d in ("flare_like", "btcv_like")}
#    print(f"liver, mean HU: { {d: round(h) for d, h in hu.items()} }; btcv_like is {hu['btcv_like'] - hu['flare_like']:.0f} HU brighter")
#    ```
#    `flare_like` is a plain (non-contrast) scan with a -30 HU offset and a 1.05 scale, so its liver is
#    darker than in the portal-venous `btcv_like`; the contrast phase explains most of the gap (the
#    tissue table in section 1), the calibration the rest.
# 2. `path = Path(data_dir) / "amos_msd"`, `export_phantom(path, "msd", cases=3, template="amos",
#    spacing=G.spacing_mm)` then `open_dataset(path).structures`: the 15
#    AMOS organs, bladder and prostate/uterus included.
# 3. The mask would label other anatomy than it claims; `load` refuses it with an error naming the file
#    and both affines.
# </details>
#
# ## What you learned
# - CT is HU on a voxel grid with an affine; the model sees the -175..250 HU window in RAS orientation.
# - The phantom draws a population, not a patient: organ sizes spread as in published cohorts, some
#   organs are absent, and every scan has its own field of view and acquisition.
# - Domains (site, protocol, population) create the gap between pre-training and target data.
# - Partial labels: the annotation mask keeps unlabelled classes out of the loss.
# - The same loaders read TotalSegmentator and MSD/FLARE layouts; few-shot splits are seeded draws.
#
# Next: **01 · pre-training a foundation model with partial labels**.
