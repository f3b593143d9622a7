"""Builds notebooks/04_selective_peft.ipynb (kept so the notebook can be regenerated)."""
from notebook_cells import (code, count_table, flare_data, md, peft_imports, peft_parameters, peft_training, setup,
                            title, write)

cells = [
title("04_selective_peft", "04 · Selective PEFT: BitFit and Affine-LN", """\
Black-box adapters leave the trunk untouched. **Selective** parameter-efficient fine-tuning opens
it, but trains only a chosen sliver of its existing weights: the **biases** of the Swin encoder
(BitFit) or the scales and shifts of its **LayerNorms** (Affine-LN). Each is a small share of the
trunk's weights (section 1 counts them), yet each sits inside every block, so the whole feature
hierarchy can move.

**You will learn to**
- select parameters by role (bias, normalisation) and count where they sit in SwinUNETR;
- see why a bias or a LayerNorm affine re-targets features to a new scanner's statistics;
- train both on a non-contrast target and compare them with zero-shot.""", sources=("bitfit",)),
setup(),
peft_parameters(),
peft_imports("from fseft_lab.methods import affine_ln, bitfit\n"),
*flare_data(),
md("""## 1. BitFit: the biases

Every linear layer of a Swin block computes $y = Wx + b$: the attention's `qkv` ($b \\in
\\mathbb{R}^{3d}$) and `proj` ($d$), and the MLP's two layers ($4d$ and $d$), 9 d per block.
Training only $b$ shifts each layer's output by a learned constant: it cannot rotate features, but
it can move every pre-activation, and with it which units fire after the GELU.
As the paper's reference code selects them (every encoder parameter named `bias` under `attn` or
`mlp`), the attention's **relative-position bias tables** train too: one learned offset per head
for each of the $13^3$ relative positions in a $7^3$ window, which the attention adds to its
scores. They hold most of BitFit's parameters (210,739 at F = 48, against 13,009 for the linear
biases alone, the paper table's "~13,000"): `relative_position_tables=False` trains the biases
only. (Zaken et al. 2022.)"""),
code("""print(inspect.getsource(bitfit.apply))"""),
code("""# NBVAL_CHECK_OUTPUT
paper_size = FoundationModel(48)                   # the paper's SwinUNETR, F = 48
for tables in (True, False):
    n = trainable_parameters(build(paper_size, "bitfit", [task], relative_position_tables=tables))
    print(f"BitFit at F = 48, relative-position tables {'trained' if tables else 'frozen'}: {n:,} trainable")"""),
md("""## 2. Affine-LN: the normalisation's scale and shift

Each block normalises its tokens twice, $\\mathrm{LN}(x) = \\gamma \\odot \\frac{x - \\mu}{\\sigma} + \\beta$.
A new scanner changes the statistics that reach each block; re-learning $\\gamma$ and $\\beta$
(2 d per LayerNorm) rescales and recentres them per channel, much like re-estimating
batch-norm statistics on a new domain."""),
code("""print(inspect.getsource(affine_ln.apply))"""),
count_table(["bitfit", "affine_ln"]),
md("""## 3. Training on the target

Unlike the adapters of notebook 03, these methods change the trunk, so there is no feature cache:
each step runs SwinUNETR forward and backward. On 2 CPU cores that limits the `cpu` profile to a
few epochs (`epochs`); on a GPU the profile's full schedule runs. Learning rate 1e-2 for both
(the paper's)."""),
*peft_training(["bitfit", "affine_ln"]),
md("""**Reading the result.** The checked lines say whether each method beat zero-shot on this
target, and by how much: the non-contrast scanner is where the foundation model is weakest (the lowest score in most columns of notebook 01's zero-shot table), and a
few epochs of tuning a sliver of the trunk's own weights to one labelled volume already move the
organ's Dice. The learning curves show whether the epochs were enough; on the `gpu` profile
(more epochs) the comparison with the adapters of notebook 03 is the interesting one. In the paper,
selective methods trail the spatial adapter at k = 1 on base organs and catch up as k grows.

## Exercises

1. Count the biases per stage for F = 48: why do the last stage's blocks hold most of them?
2. Train BitFit with `epochs=20`. Does the learning curve flatten before the early-stopping rule
   could fire (it checks from epoch 31)?
3. Combine both: what would you change in `bitfit.apply` to also unfreeze the LayerNorms?

<details><summary>Solutions</summary>

1. A block of width d has 9 d biases and the stages have widths F, 2F, 4F, 8F: the last stage
   holds 8/15 of them.
2. The curve usually still falls at epoch 20 on the `cpu` profile; the rule never fires before
   epoch 31, so all 20 epochs run.
3. Add `for _, norm in swin_modules(model, nn.LayerNorm): norm.requires_grad_(True)` before
   returning, as `affine_ln.apply` does, and register it under a new name.
</details>

## What you learned
- Selective PEFT trains existing weights chosen by role: biases, or normalisation affines.
- A small share of the weights, chosen by role, reaches every block of the trunk, which adapters
  at the head cannot.
- Opening the trunk costs a full forward and backward per step: no feature cache.

Next: **05 · LoRA**, low-rank updates of the attention weights themselves."""),
]
write(cells, "notebooks/04_selective_peft.ipynb")
