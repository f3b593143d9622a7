"""Write docs/references.md, the page every notebook's title cell links to, from SOURCES below.

    python tools/build_references.py

Each notebook's title cell repeats its entries' citation and role by hand (notebooks/NN_x.py, CONTRIBUTING.md):
change a citation here and in the title cells that cite it.
"""
from pathlib import Path

#: Sources a title cell cites, by key (the anchor its link names): every notebook cites the paper, method notebooks
#: their methods' papers. The arXiv identifiers live on one page, docs/references.md, which each title cell links to:
#: a notebook's text states no figure that its cells do not print.
SOURCES = {
    "paper": ("J. Silva-Rodríguez, J. Dolz, I. Ben Ayed, *Towards Foundation Models and Few-Shot Parameter-Efficient "
              "Fine-Tuning for Volumetric Organ Segmentation*, Medical Image Analysis, 2025", "2303.17051",
              "the course's source paper"),
    "paper_workshop": ("J. Silva-Rodríguez, J. Dolz, I. Ben Ayed, the same paper's earlier workshop version, 2023 (its first "
                       "arXiv version)", "2303.17051v1", "its table gives the paper's numbers for the base organs as binary tasks"),
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

lines = ["# References", "", "The sources the course notebooks cite (each notebook's title cell links here).", ""]
for key, (citation, arxiv, role) in SOURCES.items():
    lines.append(f'- <a id="{key}"></a>{citation}, [arXiv:{arxiv}](https://arxiv.org/abs/{arxiv}): {role}')
out = Path(__file__).resolve().parent.parent / "docs" / "references.md"
out.parent.mkdir(exist_ok=True)
out.write_text("\n".join(lines) + "\n")
print(f"wrote {out}")
