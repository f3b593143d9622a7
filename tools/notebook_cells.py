"""Cells shared by the notebook builders (tools/build_notebook_*.py): one place for the set-up."""
import nbformat as nbf

from fseft_lab.notebooks import NOT_EXECUTED_YET, run_info_block

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
REPO = "fseft-lab/fseft_lab"

#: Sources a title cell cites, by key: every notebook cites the paper, method notebooks their methods' papers.
#: The arXiv identifiers live on one page, docs/references.md (tools/build_references.py writes it), which each
#: title cell links to: a notebook's text states no figure that its cells do not print.
SOURCES = {
    "paper": ("J. Silva-Rodríguez, J. Dolz, I. Ben Ayed, *Towards Foundation Models and Few-Shot Parameter-Efficient "
              "Fine-Tuning for Volumetric Organ Segmentation*, Medical Image Analysis, 2025", "2303.17051",
              "the course's source paper"),
    "swinunetr": ("A. Hatamizadeh et al., *Swin UNETR: Swin Transformers for Semantic Segmentation of Brain Tumors in "
                  "MRI Images*, 2022", "2201.01266", "the foundation model's architecture"),
    "swin_ssl": ("Y. Tang et al., *Self-Supervised Pre-Training of Swin Transformers for 3D Medical Image Analysis*, "
                 "CVPR 2022", "2111.14791", "the self-supervised encoder the paper starts from"),
    "bitfit": ("E. Ben Zaken, S. Ravfogel, Y. Goldberg, *BitFit: Simple Parameter-efficient Fine-tuning for "
               "Transformer-based Masked Language-models*, ACL 2022", "2106.10199", "BitFit"),
    "lora": ("E. J. Hu et al., *LoRA: Low-Rank Adaptation of Large Language Models*, ICLR 2022", "2106.09685", "LoRA"),
    "arena": ("ARENA, the source paper's follow-up", "2507.15793", "adaptive-rank LoRA"),
    "adaptformer": ("S. Chen et al., *AdaptFormer: Adapting Vision Transformers for Scalable Visual Recognition*, "
                    "NeurIPS 2022", "2205.13535", "AdaptFormer"),
    "compacter": ("R. Karimi Mahabadi, J. Henderson, S. Ruder, *Compacter: Efficient Low-Rank Hypercomplex Adapter "
                  "Layers*, NeurIPS 2021", "2106.04647", "Compacter"),
    "log_barrier": ("H. Kervadec et al., *Constrained Deep Networks: Lagrangian Optimization via Log-Barrier "
                    "Extensions*", "1904.04205", "the log-barrier"),
}
REFERENCES_PAGE = f"https://github.com/{REPO}/blob/main/docs/references.md"


def reference(key: str) -> str:
    """One title-cell reference: the citation, a link to its entry (with the arXiv link) on the references page, its role."""
    citation, _, role = SOURCES[key]
    return f"{citation}, [link]({REFERENCES_PAGE}#{key}): {role}"


def title(name: str, heading: str, body: str, sources: tuple = ()) -> nbf.NotebookNode:
    """The title cell: heading, Colab badge, the line ``fseft-lab notebooks run`` fills with the committed
    outputs' profile, machine and wall time, the body, and the references (the paper, then ``sources``)."""
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{name}.ipynb)")
    references = "\n".join(f"- {reference(key)}" for key in ("paper", *sources))
    return md(f"# {heading}\n\n{badge}\n\n{run_info_block(NOT_EXECUTED_YET)}\n\n{body}\n\n**References**\n{references}")


def setup() -> nbf.NotebookNode:
    return code("""# Set-up: on Colab, install the course package; elsewhere nothing to do.
import sys
if "google.colab" in sys.modules:
    import subprocess
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "git+https://github.com/fseft-lab/fseft_lab"], check=True)""")


def parameters(source: str) -> nbf.NotebookNode:
    return code(source, metadata={"tags": ["parameters"]})


def imports(body: str, after_profile: str = "") -> nbf.NotebookNode:
    """The imports cell: the notebook's imports, then the profile, seeds, figure size and versions
    (which need torch and monai, imported here when the notebook's own imports lack them)."""
    lines = body.splitlines()
    body += "".join(f"import {m}\n" for m in ("monai", "torch") if f"import {m}" not in lines)
    return code(body + """from fseft_lab.models.zoo import checkpoint_geometry

P = get_profile(profile)                # budgets: epochs, crops, subjects
G = checkpoint_geometry("phantom_cpu")  # the course model's voxel size and patch: data is made and read at them
""" + after_profile + """torch.manual_seed(seed)
monai.utils.set_determinism(seed)
plt.rcParams["figure.dpi"] = 100
pd.set_option("display.width", 120)
print(f"torch {torch.__version__} | monai {monai.__version__} | cuda {torch.cuda.is_available()} | profile {P.name} | model: {G}")""")


def target_data(structures: str = "[task]") -> nbf.NotebookNode:
    """The TotalSegmentator-like target (cached by notebook 00), the few-shot split among the scans
    that show ``structures`` (the notebook's expression for them) and the model."""
    return code("""ts = export_phantom(Path(data_dir) / f"totalseg_like_{P.name}", "totalsegmentator", cases=P.target_cases,
                    seed=seed, spacing=G.spacing_mm, overwrite=True, progress=False)
shown = showing(ts, ts.case_ids, """ + structures + """)  # scans whose field of view holds the task's structure
split = few_shot_split(shown, k, seed, test=[c for c in ts.test_ids if c in shown])
test_ids = list(split.test[:num_test])
foundation = load_foundation("phantom_cpu")
trunk_cache = {}  # trunk features of the test volumes, shared by every frozen-trunk method below
print(f"support {split.support} | validation {split.validation} | test {test_ids}")""")


def write(cells, path: str) -> None:
    nb = nbf.v4.new_notebook(cells=cells)
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    nbf.write(nb, path)


# ---- notebooks 04-06: methods that open the trunk, on the FLARE-like (non-contrast) target ----

def peft_parameters(task: str = "spleen", extra: str = "") -> nbf.NotebookNode:
    return parameters(f"""import os
profile = os.environ.get("FSEFT_PROFILE", "auto")  # cpu, gpu, paper or auto
seed = 0                                            # the few-shot draw
k = 1                                               # labelled support volumes
task = "{task}"                                     # a base organ (binary task)
epochs = None                                       # None: 12 on the cpu profile, else the profile's
num_test = 2                                        # test volumes scored
data_dir = "../data"{extra}""")


def peft_imports(extra: str = "") -> nbf.NotebookNode:
    return imports(f"""import inspect
import warnings
warnings.filterwarnings("ignore")
from pathlib import Path

import matplotlib.pyplot as plt
import monai
import pandas as pd
import torch

from fseft_lab import viz
from fseft_lab.adapt import AdaptConfig
from fseft_lab.data.fewshot import few_shot_split
from fseft_lab.data.layouts import export_phantom
from fseft_lab.experiments import claim, load_cases, run, showing
from fseft_lab.methods import build, trainable_parameters
from fseft_lab.models.foundation import FoundationModel
from fseft_lab.models.zoo import load_foundation
from fseft_lab.profiles import get_profile
{extra}""", 'epochs = epochs or (12 if P.name == "cpu" else None)  # trunk-training epochs cost seconds each on a CPU\n')


def flare_data() -> list:
    return [md("""## The target: a non-contrast scanner

These methods change the trunk itself, so we take them where zero-shot transfer is weakest
(the lowest score in most columns of notebook 01's zero-shot table, the spleen's among them): the
FLARE-like phantom target, a plain (non-contrast) CT whose organs are closer in HU to their
neighbours than in the contrast-enhanced sources (notebook 00). Same protocol as before: k support
volumes, a validation volume, fixed test volumes."""),
            code("""flare = export_phantom(Path(data_dir) / f"flare_like_{P.name}", "msd", cases=6, seed=seed + 1, spacing=G.spacing_mm,
                       num_test=2, overwrite=True, progress=False)
shown = showing(flare, flare.case_ids, [task])  # scans that hold the task's organ
split = few_shot_split(shown, k, seed, test=[c for c in flare.test_ids if c in shown])
test_ids = list(split.test[:num_test])
foundation = load_foundation("phantom_cpu")
trunk_cache = {}
print(f"support {split.support} | validation {split.validation} | test {test_ids}")""")]


def count_table(methods) -> nbf.NotebookNode:
    return code(f"""# NBVAL_CHECK_OUTPUT
def where(model):
    \"\"\"Trainable parameters by part of the network.\"\"\"
    counts = {{"Swin blocks": 0, "patch embed/merging": 0, "conv decoder": 0, "head": 0}}
    for name, p in model.named_parameters():
        if p.requires_grad:
            part = ("head" if name.startswith("classifier") else "Swin blocks" if ".blocks." in name
                    else "patch embed/merging" if name.startswith("swinViT") else "conv decoder")
            counts[part] += p.numel()
    return counts

rows = []
for width in sorted({{P.geometry.feature_size, 48}}):
    base = FoundationModel(width)
    total = sum(p.numel() for p in base.parameters())
    for method in {list(methods)!r}:
        model = build(base, method, [task])
        n = trainable_parameters(model)
        rows.append({{"feature size": width, "method": method, "trainable": n, "of the model": f"{{n / total:.3%}}", **where(model)}})
pd.DataFrame(rows)""")


def peft_training(methods) -> list:
    return [code(f"""tables, results = [], {{}}
for method in ["zero_shot"] + {list(methods)!r}:
    table, result = run(foundation, flare, task, method, k, seed, profile=P.name, config=AdaptConfig(epochs=epochs),
                        trunk_cache=trunk_cache, test=test_ids, progress=False)
    tables.append(table)
    results[method] = result
table = pd.concat(tables, ignore_index=True)
table.groupby("method", sort=False).agg(dice=("dice", "mean"), hd95_mm=("hd95", "mean"), missed=("missed", "sum"), trainable=("trainable_params", "first"),
                                        epochs=("epochs", "first"), train_seconds=("train_seconds", "first")).round(3)"""),
            code(f"""# NBVAL_CHECK_OUTPUT
scores = table.groupby("method").dice.mean()
for method in {list(methods)!r}:
    print(claim(scores, method, "zero_shot", f"the {{task}}, non-contrast target, k = {{k}} (mean Dice)"))"""),
            code(f"""ax = viz.plot_learning_curves({{m: results[m].curve for m in {list(methods)!r}}})
_ = ax.set_title(f"{{task}}, k = {{k}}, seed {{seed}}")"""),
            code("""case = load_cases(flare, [test_ids[0]], [task], G)[0]
masks = {m: r.test_masks[test_ids[0]][0] for m, r in results.items()}
_ = viz.compare_figure(case["image"][0], case["label"][0] == 1, masks, task, spacing=[G.spacing_mm] * 3)""")]
