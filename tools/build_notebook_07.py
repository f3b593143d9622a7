"""Builds notebooks/07_novel_structures.ipynb (kept so the notebook can be regenerated)."""
from notebook_cells import imports, code, md, parameters, setup, title, write

cells = [
title("07_novel_structures", "07 · Novel structures: decoder fine-tuning, full fine-tuning, scratch", """\
So far every task was a base organ: the foundation model had a head row for it. A **novel**
structure (a lung lobe, a heart chamber, a gluteal muscle) was never labelled in pre-training: its
head row is new, and the decoder was never asked to draw its boundaries. The paper's answer is to
fine-tune the **decoder** with a new head while the encoder stays frozen (optionally with a PEFT
method in the encoder), and to compare that with fine-tuning **everything** and with training
**from scratch**.

**You will learn to**
- start a task head with a new row and choose the decoder option (frozen, fine-tuned, new);
- compare what decoder fine-tuning, full fine-tuning and scratch train, and what each step costs;
- read why the foundation model's encoder is worth keeping even for structures it never saw.

The `cpu` profile trains a few epochs only: the results need the `gpu` profile."""),
setup(),
parameters("""import os
profile = os.environ.get("FSEFT_PROFILE", "auto")  # cpu, gpu, paper or auto
seed = 0                                            # the few-shot draw
k = 1                                               # labelled support volumes
task = "lung_upper_lobe_left"                       # a novel structure (binary task)
epochs = None                                       # None: 3 on the cpu profile, else the profile's
num_test = 1                                        # test volumes scored
data_dir = "../data\""""),
imports("""import inspect
import warnings
warnings.filterwarnings("ignore")
from pathlib import Path

import matplotlib.pyplot as plt
import monai
import pandas as pd
import torch

from fseft_lab import anatomy, viz
from fseft_lab.adapt import AdaptConfig
from fseft_lab.data.fewshot import few_shot_split
from fseft_lab.data.layouts import export_phantom
from fseft_lab.experiments import load_cases, run, showing
from fseft_lab.methods import DECODER_MODULES, build, scratch, trainable_parameters
from fseft_lab.models.zoo import load_foundation
from fseft_lab.profiles import get_profile
""", 'epochs = epochs or (3 if P.name == "cpu" else None)  # every step runs the whole network forward and backward\n'),
md("""## 1. Novel structures

The paper's novel tasks are TotalSegmentator structures that no pre-training dataset labels:"""),
code("""# NBVAL_CHECK_OUTPUT
for group, structures in anatomy.NOVEL_GROUPS.items():
    print(f"{group:11s} {', '.join(structures)}")
print(f"{task} is novel: {anatomy.is_novel(task)}")"""),
code("""ts = export_phantom(Path(data_dir) / f"totalseg_like_{P.name}", "totalsegmentator", cases=P.target_cases,
                    seed=seed, spacing=G.spacing_mm, overwrite=True, progress=False)
shown = showing(ts, ts.case_ids, [task])  # scans whose field of view holds the task's structure
split = few_shot_split(shown, k, seed, test=[c for c in ts.test_ids if c in shown])
test_ids = list(split.test[:num_test])
foundation = load_foundation("phantom_cpu")
print(f"support {split.support} | validation {split.validation} | test {test_ids}")
support = load_cases(ts, split.support, [task], G)[0]
_ = viz.overlay_figure(support["image"][0], support["label"][0], [task], spacing=[G.spacing_mm] * 3,
                       title=f"support volume {split.support[0]}: {task}")"""),
md("""## 2. Three ways to learn a new structure

* **decoder + head** (`linear_probe` with `decoder="fine-tuned"`): a new head row, the conv decoder
  (`encoder1-4`, `encoder10`, `decoder5-1`) trained from its pre-trained weights, the Swin encoder frozen.
* **full fine-tuning** (`full_ft`): every weight, from the foundation model.
* **scratch** (`scratch`): the same network from a fresh initialisation, no foundation model.

Any PEFT method of notebooks 04-06 can be combined with the decoder option
(`run(..., method="lora", decoder="fine-tuned")`): the paper's best novel-structure results.
Whenever the decoder trains, the learning rate is 1e-4."""),
code("""print(inspect.getsource(scratch.apply))"""),
code("""# NBVAL_CHECK_OUTPUT
options = {"decoder + head": ("linear_probe", "fine-tuned"), "full fine-tuning": ("full_ft", "frozen"),
           "scratch": ("scratch", "frozen")}
total = sum(p.numel() for p in foundation.parameters())
rows = []
for label, (method, decoder) in options.items():
    model = build(foundation, method, [task], decoder=decoder)
    n = trainable_parameters(model)
    decoder_n = sum(p.numel() for m in DECODER_MODULES for p in getattr(model, m).parameters() if p.requires_grad)
    rows.append({"option": label, "trainable": n, "of the model": f"{n / total:.1%}", "in the decoder": decoder_n,
                 "head row": "new"})
pd.DataFrame(rows)"""),
md("""## 3. Training

Each option trains on the same support crops with the paper's protocol. On the `cpu` profile only
a few epochs fit in the time budget, so read this section for the costs (seconds per epoch, peak
memory) and the start of the learning curves; the Dice of a novel structure needs the `gpu`
profile's schedule."""),
code("""tables, results = [], {}
for label, (method, decoder) in options.items():
    table, result = run(foundation, ts, task, method, k, seed, decoder=decoder, profile=P.name,
                        config=AdaptConfig(epochs=epochs), test=test_ids, progress=False)
    tables.append(table.assign(option=label))
    results[label] = result
table = pd.concat(tables, ignore_index=True)
costs = pd.DataFrame({label: {"epochs": r.epochs_run, "seconds per epoch": round(r.train_seconds / max(1, r.epochs_run), 2),
                              "lr": f"{r.lr:.0e}"} for label, r in results.items()})
costs.T.join(table.groupby("option").dice.mean().round(3))"""),
code("""ax = viz.plot_learning_curves({label: r.curve for label, r in results.items()})
_ = ax.set_title(f"{task}, k = {k}, seed {seed}")"""),
code("""case = load_cases(ts, [test_ids[0]], [task], G)[0]
masks = {label: r.test_masks[test_ids[0]][0] for label, r in results.items()}
_ = viz.compare_figure(case["image"][0], case["label"][0] == 1, masks, task, view="coronal", spacing=[G.spacing_mm] * 3)"""),
md("""**Reading the result.** After a few CPU epochs at a learning rate of 1e-4 none of the three has
learned the lobe yet: a new head row starts at a probability of 0.02 everywhere, and 1e-4 moves
it slowly. What the tables do show is the cost. SwinUNETR's convolutional decoder holds most
of its weights (about four fifths here), so decoder fine-tuning is not "parameter-efficient" by
count; its saving is that no gradient flows through the Swin encoder, so steps are cheaper and
need less memory (`benchmarks/method_costs.py` measures both per method), and the encoder's
pre-trained features cannot be damaged by a handful of labels. With the `gpu` profile's 100 epochs the paper's ordering appears: decoder fine-tuning
(plus a PEFT method in the encoder) ahead of full fine-tuning at low k, and scratch far behind,
because the frozen encoder's features already separate tissues it was never told the names of.

## Exercises

1. Add `("lora", "fine-tuned")` to `options` and re-run. What does LoRA add to decoder fine-tuning
   in parameters and in seconds per epoch?
2. Use `decoder="new"` with the linear probe: the decoder re-initialised. What does that test?
3. Run this notebook with `epochs=30` (about 8 minutes on 2 cores) and compare the three curves.

<details><summary>Solutions</summary>

1. LoRA adds its encoder parameters (6 r d per block) and needs gradients through the Swin encoder,
   so each step costs nearly as much as full fine-tuning while training far fewer weights.
2. Whether the pre-trained decoder matters: with a new decoder only the encoder's features are
   reused, between "decoder + head" and "scratch".
3. Typically the foundation-model options' losses fall first and scratch lags, since it must learn
   its features too; with one support volume the curves are noisy, so compare several seeds.
</details>

## What you learned
- A novel structure gets a new head row; the decoder option decides how much else may change.
- Decoder fine-tuning keeps the encoder frozen: cheaper steps than full fine-tuning, though the
  decoder itself holds most of SwinUNETR's weights.
- Training from scratch discards what pre-training learned, and needs far more data and time.

Next: **08 · constrained transductive inference**."""),
]
write(cells, "notebooks/07_novel_structures.ipynb")
