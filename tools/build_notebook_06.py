"""Builds notebooks/06_adapter_peft.ipynb (kept so the notebook can be regenerated)."""
from notebook_cells import (code, count_table, flare_data, md, peft_imports, peft_parameters, peft_training, setup,
                            title, write)

cells = [
title("06_adapter_peft", "06 · Adapters inside the transformer: AdaptFormer and Compacter", """\
Where LoRA corrects existing weights, **adapter** PEFT inserts small new modules into every
transformer block. **AdaptFormer** (Chen et al. 2022) runs a bottleneck MLP in parallel with each
block's MLP; **Compacter** (Karimi Mahabadi et al. 2021) adds parameterised-hypercomplex (PHM)
layers after the attention and the MLP, building each weight matrix from a sum of Kronecker
products, with far fewer numbers than a dense matrix.

**You will learn to**
- insert a zero-initialised parallel adapter into a frozen block;
- build a weight matrix from Kronecker products and count what that saves;
- train both on the non-contrast target and compare them with zero-shot.""", sources=("adaptformer", "compacter")),
setup(),
peft_parameters(),
peft_imports("from fseft_lab.methods import adaptformer, compacter\n"),
*flare_data(),
md("""## 1. AdaptFormer: a parallel bottleneck

Beside a block's MLP, AdaptFormer adds $s \\cdot W_\\text{up}\\,\\mathrm{ReLU}(W_\\text{down} x)$ with a
bottleneck of 16 and $s = 0.1$: $x + \\mathrm{mlp}(\\mathrm{norm_2}(x)) + s\\,\\mathrm{up}(\\mathrm{ReLU}(\\mathrm{down}(x)))$.
As in the paper's reference code, the branch reads the block's tokens $x$ *before* the second
LayerNorm (`branch_input="normalised"` reads $\\mathrm{norm_2}(x)$ instead, the same count).
$W_\\text{up}$ starts at zero, so training starts from the foundation model."""),
code("""print(inspect.getsource(adaptformer.AdaptFormerBlock))"""),
md("""## 2. Compacter: weights from Kronecker products

A PHM layer builds its $d \\times d$ matrix as $W = \\sum_{i=1}^{n} A_i \\otimes B_i$ with small
"rule" matrices $A_i \\in \\mathbb{R}^{n \\times n}$ and blocks $B_i \\in \\mathbb{R}^{d/n \\times d/n}$:
$n^3 + d^2/n$ numbers instead of $d^2$ (a quarter, for $n = 4$). As in the paper's code, one PHM
layer follows the attention and one the MLP of every block, and the LayerNorms train too. The
reference code *replaces* each branch's output $y$ by a randomly initialised $Wy + b$, so the
adapted model does not start as the foundation model; `init="zero"` adds instead ($y + Wy$ with
$B_i = 0$ at the start), as the course did before."""),
code("""print(inspect.getsource(compacter.PHMLinear))"""),
code("""# NBVAL_CHECK_OUTPUT
layer = compacter.PHMLinear(96, 4)
with torch.no_grad():
    layer.weight.normal_()
w = sum(torch.kron(a, b) for a, b in zip(layer.rule, layer.weight))
print(f"W: {tuple(w.shape)} built from {layer.rule.numel() + layer.weight.numel():,} numbers; a dense W has {96 * 96:,}")"""),
count_table(["lora", "adaptformer", "compacter"]),
md("""## 3. Training on the target

Both train at the paper's learning rate of 1e-2."""),
*peft_training(["adaptformer", "compacter"]),
md("""**Reading the result.** The checked lines say whether each method beat zero-shot on the
non-contrast target, with the Dice values; the learning curves show how far the CPU's epochs
went, and the `gpu` profile runs the full schedule. In the paper AdaptFormer is a strong choice for novel structures with the decoder
fine-tuned, and Compacter, despite the most parameters of the PEFT family (its row at
F = 48 in the table above), does not beat it. That ranking is for novel structures; the checked lines above print both
methods' Dice on this base organ, where they need not agree with it.

## Exercises

1. Set `scale=1.0` for AdaptFormer (`run(..., scale=1.0)`). Why does the paper scale the branch
   down by 10?
2. For $d = 384$ (the last Swin stage at F = 48) and $n = 2, 4, 8$, how many numbers does a PHM
   layer need? Which $n$ minimises it?
3. Our Compacter follows the reference code: it replaces $y$ by a randomly initialised $Wy$.
   Compare its zero-shot Dice at step 0 with `init="zero"` ($y + Wy$, $B_i = 0$ at the start).
   What does the reference lose at step 0, and does training recover it?

<details><summary>Solutions</summary>

1. The parallel branch's output is added to features of a trained network; at full scale its
   early, noisy updates perturb every block more, which tends to destabilise few-shot training.
2. $n^3 + d^2/n$: 73,736 for n = 2, 36,928 for n = 4, 18,944 for n = 8; the minimum is near
   $n = (d^2/3)^{1/4} \\approx 15$, but $n$ must divide $d$ (n = 16: 13,312).
3. The pre-trained attention and MLP outputs: the reference model at step 0 is not the
   foundation model, so zero-shot knowledge must be re-learned from the support set.
</details>

## What you learned
- Adapter PEFT inserts new modules into every block; zero-initialised, it starts at zero-shot.
- PHM layers trade a dense matrix for Kronecker products: fewer numbers, same shape.
- Parameter count alone does not rank methods: compare the counts and the checked Dice lines of
  notebooks 04-06.

Next: **07 · novel structures**: decoder fine-tuning, full fine-tuning and training from scratch."""),
]
write(cells, "notebooks/06_adapter_peft.ipynb")
