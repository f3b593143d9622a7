"""Builds notebooks/05_lora.ipynb (kept so the notebook can be regenerated)."""
from notebook_cells import (code, count_table, flare_data, md, peft_imports, peft_parameters, peft_training, setup,
                            title, write)

cells = [
title("05_lora", "05 · LoRA: low-rank updates of the attention weights", """\
LoRA (Hu et al. 2022) keeps every pre-trained weight matrix $W$ frozen and learns a low-rank
correction beside it, $W + \\frac{\\alpha}{r} BA$. In SwinUNETR it sits on each attention block's
`qkv` projection, the matrix that decides what each window attends to. With rank 4 that is about a
thousandth of the model at the paper's size (the table below prints the count); the update can be merged into $W$
after training, so inference costs nothing extra.

**You will learn to**
- write a LoRA layer that starts as an exact copy of the frozen layer;
- see how rank trades parameters for capacity;
- train LoRA on the non-contrast target and compare it with zero-shot.""", sources=("lora", "arena")),
setup(),
peft_parameters(extra='\nresults_dir = "../results"'),
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
md("""Parameters grow linearly with $r$: $12rd$ per block ($A$: $3r \\times d$, $B$: $3d \\times 3r$), plus
the head. Where they sit, next to the methods of notebook 04:"""),
count_table(["bitfit", "affine_ln", "lora"]),
md("""## 2. Training on the target

The paper trains LoRA at a learning rate of 1e-3 (ten times lower than BitFit's): the update
multiplies activations, so large steps on $B$ quickly move every attention map."""),
*peft_training(["lora"]),
md("""**Merging.** After training, $W' = W + \\frac{\\alpha}{r}BA$ is one matrix of the original size:
the adapted model is exactly as fast as the foundation model, and the adapter file stores only
the trained tensors ($A$, $B$ and the task head): four bytes per trainable parameter of the table above.

**Reading the result.** The checked line says whether LoRA beat zero-shot on the non-contrast
target, with both Dice values; the learning curve shows whether the CPU's epochs were enough, and
the `gpu` profile runs the full schedule. In the paper LoRA is among the best methods for
novel structures (with the decoder fine-tuned, notebook 07) but behind the spatial adapter for base
organs at k = 1."""),
md("""## 3. Beyond the paper: adaptive-rank LoRA

Which rank? Too low and the update cannot express the task, too high and one support volume
over-fits it, and the best rank may differ between the first Swin stage and the last. The
paper's follow-up (ARENA) lets each layer choose: write the update as a sum of rank-one terms
with their own scales,

$$\\mathrm{qkv}(x) = Wx + \\frac{\\alpha}{r} P\\,\\mathrm{diag}(s)\\,Q x = Wx + \\frac{\\alpha}{r}\\sum_{i=1}^{3r} s_i\\, p_i q_i^\\top x,$$

add an L1 penalty $\\lambda \\lVert s \\rVert_1$, and handle it with its **proximal step** after each
optimiser step, soft-thresholding:
$s_i \\leftarrow \\mathrm{sign}(s_i) \\max(|s_i| - \\eta\\lambda, 0)$ ($\\eta$ the learning rate). A component whose
gradient does not keep pushing it one way is set to exactly zero; the layer's rank is the number
of non-zero $s_i$. $s$ starts at zero, so the model starts equal to the foundation model."""),
code("""from fseft_lab.methods import adaptive_lora
print(inspect.getsource(adaptive_lora.AdaptiveLoRALinear.proximal))"""),
md("""**Does it find the right rank?** A toy first: a frozen layer whose target is the layer plus a
known rank-2 update. Adaptive LoRA starts with 3r = 24 components; we follow how many survive."""),
code("""torch.manual_seed(0)
d = 16
base = torch.nn.Linear(d, 3 * d).requires_grad_(False)
delta = torch.randn(3 * d, 2) @ torch.randn(2, d) / d ** 0.5          # the true update: rank 2
fig, ax = plt.subplots(figsize=(5.5, 3.2))
for l1 in (0.0, 0.2, 0.5):
    torch.manual_seed(1)
    layer = adaptive_lora.AdaptiveLoRALinear(base, rank=8, alpha=8.0, l1=l1)
    optimizer = torch.optim.Adam([layer.lora_Q.weight, layer.lora_s, layer.lora_P.weight], lr=1e-2)
    ranks = []
    for step in range(400):
        x = torch.randn(64, d)
        loss = (layer(x) - (base(x) + x @ delta.T)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        layer.proximal(lr=1e-2)
        ranks.append(layer.rank())
    ax.plot(ranks, label=f"lambda = {l1}: rank {ranks[-1]}, error {loss.item():.4f}")
ax.axhline(2, color="0.5", ls=":")
_ = ax.set(xlabel="step", ylabel="non-zero components", title="recovering a rank-2 update", ylim=(0, 26))
_ = ax.legend(fontsize=8, frameon=False)"""),
md("""Without the penalty all 24 components stay; with $\\lambda = 0.5$ the layer ends with exactly the
two it needs and the same error. With Adam each step moves $s_i$ by about $\\eta$ whatever its
gradient's size, so $\\lambda$ is a fraction: components whose gradient sign is consistent grow at
$\\eta(1 - \\lambda)$ per step, the others are pulled to zero.

**On the model.** `benchmarks/adaptive_lora.py` trains LoRA (rank 4) and adaptive-rank LoRA
(up to rank 8, $\\lambda = 0.5$) on a novel structure with the decoder fine-tuned (notebook 07's
set-up) on the same draws, and commits the Dice and the learned ranks per layer. The committed
cpu run is small (the first line below prints its draws and epochs) and used an earlier, less trained shipped phantom model
(`results/adaptive_lora.json` records its checksum): neither method had learned the lobe yet, so
read the ranks, not the Dice. We read them:"""),
code("""results_file = Path(results_dir) / "adaptive_lora.csv"
if not results_file.is_file():
    print(f"{results_file} is missing: run `python benchmarks/adaptive_lora.py` from the repository root")
else:
    from fseft_lab.experiments import summary
    bench = pd.read_csv(results_file)
    print(bench.task.iloc[0], "| k =", bench.k.iloc[0], "| decoder", bench.decoder.iloc[0], "|",
          bench.seed.nunique(), "draw(s), epochs:", ", ".join(str(e) for e in sorted(bench.epochs.unique())))
    display(summary(bench).round(3))
    ranks = pd.read_csv(results_file.with_name("adaptive_lora_ranks.csv"))
    ax = ranks.pivot(index="layer", columns="seed", values="rank").plot.bar(figsize=(8, 3))
    ax.axhline(ranks.max_rank.iloc[0], color="0.5", ls=":", label="initial rank")
    _ = ax.set(ylabel="learned rank (non-zero s)", title="adaptive-rank LoRA: rank per attention block")"""),
md("""**Reading it.** The ranks say which attention blocks the task wanted to change; compare the
Dice with LoRA's against the spread across draws before calling either better. The effective
parameter count is the sum over layers of rank x (4d + 1): a pruned component's $p_i$ and
$q_i$ can be dropped after training.

## Exercises

1. Merge a trained `LoRALinear` into a plain `nn.Linear` and check both give the same output.
2. Train with `rank=1` (pass `rank=1` to `run`). How much Dice do 4x fewer parameters cost here?
3. Why must $B$, not $A$, start at zero? What happens if both do?
4. In the toy, set $\\lambda = 1$. Why does the rank fall to zero first and then recover?

<details><summary>Solutions</summary>

1. `merged = nn.Linear(d, 3 * d); merged.weight.data = layer.base_layer.weight + layer.scaling *
   layer.lora_B.weight @ layer.lora_A.weight; merged.bias.data = layer.base_layer.bias`, then
   `torch.allclose(merged(x), layer(x), atol=1e-6)`.
2. Compare the two Dice values; at k = 1 the difference is usually within the spread across seeds.
3. $B = 0$ makes the update zero while $A$'s random directions give $B$ a non-zero gradient. With
   both at zero, both gradients are zero and training never starts.
4. The threshold $\\eta\\lambda$ then equals Adam's typical step, so no component can grow in the
   first steps; once Adam's moment estimates favour a few directions their steps exceed the
   threshold and they come back.
</details>

## What you learned
- LoRA learns a rank-r correction to frozen attention weights, zero at the start.
- Its cost grows linearly with r; after training it merges into the weights for free.
- Adaptive-rank LoRA writes the update as $P\\,\\mathrm{diag}(s)\\,Q$ and soft-thresholds $s$, so
  each layer keeps the rank its task needs.

Next: **06 · AdaptFormer and Compacter**, adapters inside the transformer blocks."""),
]
write(cells, "notebooks/05_lora.ipynb")
