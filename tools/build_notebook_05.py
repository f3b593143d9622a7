"""Builds notebooks/05_lora.ipynb (kept so the notebook can be regenerated)."""
from notebook_cells import (code, count_table, flare_data, md, peft_imports, peft_parameters, peft_training, setup,
                            title, write)

cells = [
title("05_lora", "05 · LoRA: low-rank updates of the attention weights", """\
LoRA (Hu et al. 2022) keeps every pre-trained weight matrix $W$ frozen and learns a low-rank
correction beside it, $W + \\frac{\\alpha}{r} BA$. In SwinUNETR it sits on each attention block's
`qkv` projection, the matrix that decides what each window attends to. With rank 4 that is 69,169
trainable parameters at the paper's size, 0.1 % of the model; the update can be merged into $W$
after training, so inference costs nothing extra.

**You will learn to**
- write a LoRA layer that starts as an exact copy of the frozen layer;
- see how rank trades parameters for capacity;
- train LoRA on the non-contrast target and compare it with zero-shot.

**Run time**: about 2-3 minutes with the `cpu` profile on 2 cores."""),
setup(),
peft_parameters(),
peft_imports("from fseft_lab.methods import lora\n"),
*flare_data(),
md("""## 1. The LoRA layer

For a frozen linear map $W \\in \\mathbb{R}^{3d \\times d}$ (queries, keys and values of $d$-wide
tokens) LoRA adds

$$\\mathrm{qkv}(x) = Wx + \\frac{\\alpha}{r} B A x, \\qquad A \\in \\mathbb{R}^{3r \\times d},\\ B \\in \\mathbb{R}^{3d \\times 3r},$$

with $A$ random and $B = 0$ at the start, so the adapted model equals the foundation model at
step 0, and the update $BA$ has rank at most $3r$. The paper's code gives queries, keys and values
rank $r$ each (A maps $d \\to 3r$)."""),
code("""print(inspect.getsource(lora.LoRALinear))"""),
code("""# NBVAL_CHECK_OUTPUT
rank_rows = []
for rank in (1, 2, 4, 8, 16):
    model = build(FoundationModel(48), "lora", [task], rank=rank)
    rank_rows.append({"rank r": rank, "trainable (F = 48)": trainable_parameters(model)})
pd.DataFrame(rank_rows)"""),
md("""Parameters grow linearly with $r$: $6rd$ per block ($A$: $3r \\times d$, $B$: $3d \\times 3r$), plus
the head. Where they sit, next to the methods of notebook 04:"""),
count_table(["bitfit", "affine_ln", "lora"]),
md("""## 2. Training on the target

The paper trains LoRA at a learning rate of 1e-3 (ten times lower than BitFit's): the update
multiplies activations, so large steps on $B$ quickly move every attention map."""),
*peft_training(["lora"]),
md("""**Merging.** After training, $W' = W + \\frac{\\alpha}{r}BA$ is one matrix of the original size:
the adapted model is exactly as fast as the foundation model, and the adapter file stores only
$A$ and $B$ (about 70 KB on the `cpu` profile, 280 KB at F = 48).

**Reading the result.** At a few CPU epochs LoRA has moved little from zero-shot; the `gpu`
profile shows what it does with a full schedule. In the paper LoRA is among the best methods for
novel structures (with the decoder fine-tuned, notebook 07) but behind the spatial adapter for base
organs at k = 1.

## Exercises

1. Merge a trained `LoRALinear` into a plain `nn.Linear` and check both give the same output.
2. Train with `rank=1` (pass `rank=1` to `run`). How much Dice do 4x fewer parameters cost here?
3. Why must $B$, not $A$, start at zero? What happens if both do?

<details><summary>Solutions</summary>

1. `merged = nn.Linear(d, 3 * d); merged.weight.data = layer.base_layer.weight + layer.scaling *
   layer.lora_B.weight @ layer.lora_A.weight; merged.bias.data = layer.base_layer.bias`, then
   `torch.allclose(merged(x), layer(x), atol=1e-6)`.
2. Compare the two Dice values; at k = 1 the difference is usually within the spread across seeds.
3. $B = 0$ makes the update zero while $A$'s random directions give $B$ a non-zero gradient. With
   both at zero, both gradients are zero and training never starts.
</details>

## What you learned
- LoRA learns a rank-r correction to frozen attention weights, zero at the start.
- Its cost grows linearly with r; after training it merges into the weights for free.
- Adaptive-rank LoRA (later in the course) lets each layer choose its own rank.

Next: **06 · AdaptFormer and Compacter**, adapters inside the transformer blocks."""),
]
write(cells, "notebooks/05_lora.ipynb")
