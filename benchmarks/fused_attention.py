"""Inference with the Swin encoder's window attention fused: seconds per volume and what changes
(prints figures; asserts nothing).

    python benchmarks/fused_attention.py [--cases 2] [--domain btcv_like]

``evaluate.predict`` runs the window attention as one fused kernel (PyTorch's
``scaled_dot_product_attention``; :func:`fseft_lab.evaluate.fused_window_attention`). This scores
held-out phantoms both ways with the shipped model: seconds per volume (sliding windows over the
whole volume), the largest logit difference, and the Dice between the two masks of each base organ.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from monai.inferers import sliding_window_inference

from fseft_lab.anatomy import BASE_ORGANS, template_index
from fseft_lab.data.layouts import export_phantom
from fseft_lab.data.transforms import preprocess
from fseft_lab.evaluate import predict, to_masks
from fseft_lab.models.zoo import load_foundation


@torch.no_grad()
def explicit(model, image, patch_size):
    """``predict`` without the fused attention: MONAI's explicit softmax(QK^T + B) V."""
    return sliding_window_inference(image, (patch_size,) * 3, 2, model, overlap=0.25, mode="gaussian")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--domain", default="btcv_like")
    parser.add_argument("--checkpoint", default="phantom_cpu")
    args = parser.parse_args()
    model = load_foundation(args.checkpoint).eval()
    g = model.geometry
    print(f"{platform.machine()} | {torch.get_num_threads()} threads | torch {torch.__version__} | {args.checkpoint} at {g}")
    channels = [template_index(s) for s in BASE_ORGANS]
    with tempfile.TemporaryDirectory() as tmp:
        ds = export_phantom(Path(tmp) / "held_out", "msd", cases=args.cases, seed=950, domain=args.domain,
                            spacing=g.spacing_mm, template="amos", num_test=0, progress=False)
        cases = [preprocess(g.spacing_mm, g.patch_size)(ds.load(c, BASE_ORGANS)) for c in ds.cases]
    for case in cases:
        image = torch.as_tensor(case["image"])[None]
        times, logits = {}, {}
        for name, infer in (("explicit", explicit), ("fused", predict), ("explicit", explicit), ("fused", predict)):
            start = time.perf_counter()
            logits[name] = torch.as_tensor(infer(model, image, g.patch_size)).float()
            times[name] = time.perf_counter() - start            # the second of each pair: warm
        a, b = (to_masks(logits[n][:, channels])[0].bool() for n in ("explicit", "fused"))
        agreement = [float(2 * (x & y).sum() / max(1, int(x.sum() + y.sum()))) for x, y in zip(a, b)]
        print(f"{case['case']} {tuple(image.shape[2:])}: explicit {times['explicit']:.1f} s, fused {times['fused']:.1f} s "
              f"({times['explicit'] / times['fused']:.2f}x); largest logit difference "
              f"{float((logits['explicit'] - logits['fused']).abs().max()):.1e}; Dice between the two masks, "
              f"lowest over the base organs {min(agreement):.4f}")


if __name__ == "__main__":
    main()
