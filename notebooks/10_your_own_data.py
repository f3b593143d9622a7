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
# # 10 · Your own data: real CT, a public checkpoint, a terminal workflow
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/fseft-lab/fseft_lab/blob/main/notebooks/10_your_own_data.ipynb)
#
# <!-- run-info -->*Committed outputs: cpu profile, x86_64 with 2 CPU cores, no GPU, 176 s (executed 2026-12-07 with `fseft-lab notebooks run`).*<!-- /run-info -->
#
# The course ends where your own work starts: a folder of real CT (TotalSegmentator, FLARE22, BTCV or
# your hospital's export) and the real FSEFT foundation model instead of the phantoms and the small
# shipped model. This notebook shows where to get them, how the loaders read them, and the same
# few-shot adaptation as before, ending with a segmentation file that opens in ITK-SNAP or 3D Slicer
# on top of the scan.
#
# Without network or real data (as in CI) it runs on **stand-ins** and says so: a phantom folder
# exported in the TotalSegmentator layout, and the shipped phantom model written in the FSEFT
# checkpoint's key names. Set `data` and `checkpoint` below and the same cells use the real thing.
#
# **You will learn to**
# - lay out TotalSegmentator and MSD-style folders (FLARE22, BTCV) so that the loaders read them;
# - name your label values with a small JSON or YAML file when a folder's own names do not fit;
# - fetch a public checkpoint and load it through its key remapping;
# - adapt with k labelled scans, save a kilobyte adapter, and segment a new scan on its own grid.
#
# **References**
# - J. Silva-Rodríguez, J. Dolz, I. Ben Ayed, *Towards Foundation Models and Few-Shot Parameter-Efficient Fine-Tuning for Volumetric Organ Segmentation*, Medical Image Analysis, 2025, [link](https://github.com/fseft-lab/fseft_lab/blob/main/docs/references.md#paper): the course's source paper
# - A. Hatamizadeh et al., *Swin UNETR: Swin Transformers for Semantic Segmentation of Brain Tumors in MRI Images*, 2022, [link](https://github.com/fseft-lab/fseft_lab/blob/main/docs/references.md#swinunetr): the foundation model's architecture

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
task = "spleen"                                     # a structure your folder labels
method = "spatial_adapter"                          # any name of `fseft-lab methods`
data = None          # your TotalSegmentator or MSD folder; None: a phantom stand-in
labels = None        # MSD folders: a template name (flare22, btcv, ...) or a JSON/YAML label-map file
checkpoint = None    # the FSEFT checkpoint file (fseft.pth); None: a stand-in in its key names
num_test = 2         # test scans scored
work_dir = "../data/notebook10"

# %%
import warnings
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import monai
import nibabel as nib
import numpy as np
import pandas as pd
import torch

from fseft_lab import viz
from fseft_lab.data.layouts import export_phantom, open_dataset, read_label_map
from fseft_lab.experiments import RunOptions, run, showing
from fseft_lab.methods import load_adapter_file
from fseft_lab.models import zoo
from fseft_lab.models.foundation import FoundationModel
from fseft_lab.predict import segment_file
from fseft_lab.profiles import get_profile
from fseft_lab.models.zoo import checkpoint_geometry

P = get_profile(profile)                # budgets: epochs, crops, subjects
G = checkpoint_geometry("phantom_cpu")  # the course model's voxel size and patch: data is made and read at them
torch.manual_seed(seed)
monai.utils.set_determinism(seed)
plt.rcParams["figure.dpi"] = 100
pd.set_option("display.width", 120)
print(f"torch {torch.__version__} | monai {monai.__version__} | cuda {torch.cuda.is_available()} | profile {P.name} | model: {G}")

# %% [markdown]
# ## 1. Getting real CT
#
# | dataset | where | terms | layout the loaders read |
# | --- | --- | --- | --- |
# | TotalSegmentator (1,228 CT, 117 structures) | [Zenodo 10047292](https://zenodo.org/records/10047292) | CC BY 4.0 | `s0000/ct.nii.gz`, `s0000/segmentations/<structure>.nii.gz`, `meta.csv` (its `split` column marks test cases) |
# | FLARE22 (abdomen, 13 organs) | [flare22.grand-challenge.org](https://flare22.grand-challenge.org/) | after registration, the challenge's data agreement | MSD: `imagesTr/<case>_0000.nii.gz`, `labelsTr/<case>.nii.gz`, `dataset.json`; label values: template `flare22` |
# | BTCV (abdomen, 13 organs) | [Synapse, "Multi-Atlas Labeling Beyond the Cranial Vault"](https://www.synapse.org/#!Synapse:syn3193805) | after registration, Synapse's terms | MSD layout after conversion; template `btcv` |
# | your hospital's export | DICOM converted with `dcm2niix` | yours | either layout; a label-map file names the values |
#
# Nothing here downloads data for you: these datasets need a registration or a large download
# you start yourself. Any orientation (RAS, LPS, oblique), anisotropic spacing, integer images with
# a scale and slope, `.nii` or `.nii.gz` and a trailing singleton fourth axis are read as they are.
# A label map whose values your file does not name is read with a warning (the extra values count as
# background); a case without the task's mask is reported and left out, not crashed on.

# %%
# the data this run uses
if data is None:
    stand_in = export_phantom(Path(work_dir).parent / f"totalseg_like_{P.name}", "totalsegmentator",
                              cases=P.target_cases, seed=seed, spacing=G.spacing_mm, overwrite=True)
    data = stand_in.root
    print(f"STAND-IN DATA: no folder was given (data=None), so this run reads a phantom folder exported in the\n"
          f"TotalSegmentator layout: {data}. Set data = '/path/to/Totalsegmentator_dataset' for the real one.")
else:
    print(f"real data: {data}")
dataset = open_dataset(data, labels)
print(f"{dataset.layout} layout | {len(dataset.cases)} cases, {len(dataset.test_ids)} marked test | "
      f"{len(dataset.structures)} structures, e.g. {', '.join(dataset.structures[:6])}")
missing = dataset.lacking([task])
print(f"cases without a {task} mask: {sorted(missing) or 'none'}")

# %% [markdown]
# An MSD-style folder whose `dataset.json` names its labels differently (or not at all) takes a
# label map: a few lines of JSON or YAML from structure to value, checked entry by entry (an unknown
# structure name or a value used twice is refused with the entry).

# %%
label_map = Path(work_dir) / "my_labels.yaml"
label_map.parent.mkdir(parents=True, exist_ok=True)
label_map.write_text("liver: 1\nspleen: 2\nkidney_left: 3\n")
print(label_map.read_text())
print("read as value -> structure:", read_label_map(label_map))

# %% [markdown]
# ## 2. A public checkpoint
#
# The zoo lists the checkpoints the paper starts from, with where they live, their licence and how
# their keys are renamed into this library's SwinUNETR (prefixes such as `module.`, `swin_vit` for
# `swinViT`, the head `out.conv.conv` for `classifier`, head rows matched by structure name).
# `fseft-lab zoo download NAME` fetches one into `~/.cache/fseft_lab` with a progress bar and a
# checksum where one is published; the FSEFT model sits behind a Google Drive page, so you download
# `fseft.pth` by hand and pass its path.

# %%
pd.DataFrame([{"name": e.name, "feature size": e.feature_size, "licence": e.licence,
               "where": "shipped" if e.url is None else ("by hand" if e.manual else "fseft-lab zoo download")}
              for e in zoo.ZOO.values()]).set_index("name")

# %%
if checkpoint is None:
    # the shipped phantom model written the way the FSEFT checkpoint is: {"state_dict": {"module.swin_vit...",
    # "module.out.conv.conv.weight", ...}}; then loaded back through the FSEFT entry's remapping
    own = zoo.load_foundation("phantom_cpu").state_dict()
    public = {"module." + k.replace("swinViT", "swin_vit").replace("classifier", "out.conv.conv"): v for k, v in own.items()}
    checkpoint = Path(work_dir) / "fseft_stand_in.pth"
    torch.save({"state_dict": public}, checkpoint)
    # the real one: width 48, MONAI < 1.5 merging, 1.5 mm voxels and 96^3 patches; the stand-in: the phantom model's own
    entry = replace(zoo.get_checkpoint("fseft"), feature_size=12, legacy_merging=False, spacing_mm=G.spacing_mm,
                    patch_size=G.patch_size)
    print(f"STAND-IN CHECKPOINT: {checkpoint} holds the shipped phantom model in the FSEFT key names\n"
          f"(e.g. {list(public)[0]}). With the real fseft.pth, set checkpoint = '/path/to/fseft.pth'.")
else:
    entry = zoo.get_checkpoint("fseft")
foundation = FoundationModel(entry.feature_size, legacy_merging=entry.legacy_merging)
report = zoo.load_checkpoint(foundation, checkpoint, entry)
print(f"missing keys: {report.missing or 'none'} | unexpected: {report.unexpected or 'none'} | "
      f"head rows placed by name: {len(report.head_rows)} | run at {foundation.geometry}")

# %% [markdown]
# ## 3. Few-shot adaptation on that folder
#
# The same call as in notebooks 02-08: k labelled scans drawn from the folder's training cases,
# its test cases scored. `cache_dir` keeps each pre-processed scan on disk, so a second run (or a
# folder of a thousand scans) skips reading and resampling; an entry is re-made when its source file
# changes. `save_adapter_to` writes only the trained tensors. `largest_component` (on by default)
# keeps the largest connected blob of each structure that is anatomically one piece, which removes
# stray islands far from the organ (one far island sets HD95, a distance, to how far it lies from
# the organ). `nsd`, the normalised surface Dice, is the fraction of both surfaces that lies
# within 3 mm of the other: 1 when every boundary voxel is within that tolerance. With one labelled
# scan, two test scans can score very differently: the table gives each one its row, beside the
# zero-shot model's Dice on the same scan, the baseline an adaptation has to beat.

# %%
adapter = Path(work_dir) / f"{task}_{method}_k{k}.pt"
test = showing(dataset, dataset.test_ids, [task])[:num_test]  # test scans whose field of view holds the structure
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    options = RunOptions(profile=P.name, test=test, save_adapter_to=adapter, cache_dir=Path(work_dir) / "cache",
                         largest_component=True,   # the run's settings beyond (task, method, k, seed)
                         trunk_cache={})           # runs whose trunk stays frozen share the test scans' trunk features
    rows, result = run(foundation, dataset, task, method, k, seed, options)
    baseline, _ = run(foundation, dataset, task, "zero_shot", k, seed, replace(options, save_adapter_to=None))
print(f"{method}, k = {k}: {result.trainable:,} trainable parameters, {result.train_seconds:.0f} s | "
      f"adapter file {adapter.stat().st_size / 1024:.0f} KB")
rows[["case", "structure", "dice", "hd95", "nsd"]].merge(
    baseline[["case", "dice"]].rename(columns={"dice": "zero_shot_dice"}), on="case").round(3)

# %% [markdown]
# ## 4. Segment a new scan, on its own grid
#
# `fseft-lab predict` resamples the scan as the model needs, runs sliding windows, and maps the
# labels back onto the scan's own voxel grid and affine, so the output overlays the input in any
# viewer. From a terminal, the whole workflow is:
#
# ```
# fseft-lab adapt --data /path/to/folder --task spleen --method spatial_adapter --k 1 --cache data/cache \
#                 --save-adapter spleen.pt --out results.csv
# fseft-lab predict --adapter spleen.pt -i new_scan.nii.gz -o new_scan_spleen.nii.gz   # or -i FOLDER -o FOLDER
# ```
#
# With only a handful of labelled scans, choose what is scored: `--num-test 1` or `--test-cases ID ...`,
# `--leave-one-out` (each scan scored once, adapting on the others), or `--deploy --save-adapter
# spleen.pt` (adapt on every scan, score none, then `predict`). Any structure your folder labels is
# a task, also one the universal template lacks (a new head row, as for the heart chambers). In a
# TotalSegmentator v2 folder `heart` is the whole heart: the paper's five-part heart task needs
# TotalSegmentator v1's chamber masks or v2's separate chamber sub-task.
#
# Here the same function runs on the test scan the adapter scored worst (the table above), with
# the adapted model in memory: a mean hides the scan that fails, a figure of it does not. The table
# compares each scan with the zero-shot model on the same scan: one labelled scan can also leave a
# test scan below zero-shot. The Dice in the figure's title is the one drawn slice's, not the
# volume's, so it differs from the table's.

# %%
worst = rows.sort_values("dice").case.iloc[0]
print(f"the worst test scan: {worst}")
scan = dataset.case(worst)
model = load_adapter_file(foundation, adapter).eval()
out = segment_file(model, scan.image, Path(work_dir) / "prediction.nii.gz", P.name, largest_component=True)
written, original = nib.load(str(out)), nib.load(str(scan.image))
print(f"{out.name}: shape {written.shape} like the scan's {original.shape[:3]}; "
      f"same affine: {np.allclose(written.affine, original.affine)}; values {sorted(np.unique(np.asarray(written.dataobj)).tolist())}")
truth = dataset.load(scan, [task])["label"][0].numpy()
_ = viz.compare_figure(original.get_fdata(), truth, {method: np.asarray(written.dataobj) == 1}, task,
                       spacing=original.header.get_zooms()[:3])
plt.show()

# %% [markdown]
# The same scan in 3-D (`viz.show3d`, as in notebook 00), the prediction against the truth: the
# prediction in the structure's colour, the truth in yellow over it. Where they agree the two mix;
# yellow alone is organ the model missed, the structure's colour alone is predicted outside it
# (`viewer.volumes[2].opacity = 0` hides the truth). `affine=` places a scan stored in any
# orientation; the view still puts the patient's right on the screen's left. Without a browser the
# cell prints one line instead.

# %%
viewer = viz.show3d(original.get_fdata(), np.asarray(written.dataobj), (task,), truth=truth, affine=original.affine)

# %% [markdown]
# ## What to take away
#
# - The loaders read the real layouts as they come; odd files get a message that names the file.
# - A public checkpoint is a state dict under other key names: the zoo's remapping is the whole trick.
# - An adapter file is kilobytes: share it, not the foundation model, and not the patients' scans.
#
# **Exercises**
# 1. Point `data` at a folder of your own (or re-export the phantom in the MSD layout with
#    `fseft-lab phantom export DIR --layout msd`) and write the label map it needs.
# 2. Delete one training case's spleen mask in the stand-in folder and run section 3 again: which
#    message tells you, and which cases are drawn now?
# 3. Re-run section 3 and compare its time with the first run: what did the cache save?
#
# <details><summary>Solutions</summary>
#
# 1. `fseft-lab phantom export /tmp/msd_like --layout msd --cases 6 --spacing 3` (the course model's
#    voxels; the domain's own, much finer voxels are slow to export and resample on a laptop), then `data = "/tmp/msd_like"`:
#    its `dataset.json` names every label value, so `labels = None` reads them. A folder whose
#    `dataset.json` names its values otherwise (or not at all) needs `labels`: a template name such
#    as `"flare22"` when its values follow that challenge's, else a file like `my_labels.yaml` above,
#    one `structure: value` line per value your masks use; `read_label_map(path)` shows how it is read.
# 2. Section 1's print, `cases without a spleen mask`, names the case (section 3 also warns that it
#    is left out, but that cell silences warnings). The draw is made among the cases that label the
#    spleen, so the same seed may draw other cases: `split_for(dataset, task, k, seed).support`
#    (from `fseft_lab.experiments`) lists them, before and after. The stand-in folder is shared
#    with other notebooks: delete it and run section 1 again to restore it.
# 3. Time the cell both ways: delete `Path(work_dir) / "cache"`, then put `start = time.perf_counter()`
#    before `run(...)` and print `time.perf_counter() - start` after it (`import time`), and run the
#    cell twice. The second run reads each pre-processed scan from `cache_dir` instead of reading and
#    resampling its NIfTI file, so it is faster by that loading time; `result.train_seconds`, the
#    training alone, stays about the same.
# </details>
