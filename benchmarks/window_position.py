"""Does the model find an organ wherever a sliding window puts it? (prints figures; asserts nothing)

    python benchmarks/window_position.py DATASET --cases s0003 s0010 s0011 [--organs spleen kidney_left]
                                          [--checkpoint phantom_cpu [runs/x/model.pt ...]]

One window of the model's patch is centred on each organ of each case (pre-processed as ``adapt``
does: the model's voxel size), then moved along each axis so that the organ sits up to 3/8 of a
patch off the window's centre, toward either edge. Prints the mean predicted probability on the
organ's voxels at each offset, per checkpoint. Sliding-window inference places organs anywhere in a
window: a model that only finds an organ near a window's centre misses it on scans where the window
grid falls badly (a wide body at overlap 0.25: the spleen 16 voxels toward a window's medial edge,
with no spine in view). Offsets are in voxels; + moves the organ toward the window's +x (patient
left to right in RAS: medial for a left-sided organ), +y, +z edge. A window that would reach past
the scan is not scored ("-"): sliding windows stay inside it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from fseft_lab.anatomy import UNIVERSAL_TEMPLATE
from fseft_lab.data.layouts import open_dataset
from fseft_lab.data.transforms import preprocess
from fseft_lab.evaluate import fused_window_attention
from fseft_lab.models.zoo import load_foundation, manifest, sha256


def windows_about(image: torch.Tensor, truth: np.ndarray, patch: int, offsets) -> dict:
    """(axis, offset) -> (window of the image, the organ's voxels in it): one window centred on the
    organ, moved so that the organ sits ``offset`` voxels from its centre toward the +axis edge."""
    padded = F.pad(image, (patch,) * 6)
    truth = np.pad(truth, patch)
    centre = np.round(ndimage.center_of_mass(truth)).astype(int)
    windows = {}
    for axis in range(3):
        for d in offsets:
            corner = centre - patch // 2
            corner[axis] -= d
            window = tuple(slice(int(a), int(a) + patch) for a in corner)
            inside = all(patch <= a and a + patch <= patch + n for a, n in zip(corner, image.shape[1:]))
            # a window reaching past the scan: sliding windows never do (the scan is at least a patch), so no figure
            windows[("xyz"[axis], d)] = (padded[(slice(None), *window)][None], torch.from_numpy(truth[window])) if inside else None
    return windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="an exported dataset folder (fseft-lab phantom export)")
    parser.add_argument("--cases", nargs="+", required=True)
    parser.add_argument("--organs", nargs="+", default=["spleen", "kidney_left"])
    parser.add_argument("--checkpoint", nargs="+", default=["phantom_cpu"], help="zoo names or weights files")
    parser.add_argument("--reach", type=float, default=0.375, help="largest offset, as a fraction of the patch")
    args = parser.parse_args()
    torch.manual_seed(0)
    dataset = open_dataset(args.data)
    models = {name: load_foundation(name).eval() for name in args.checkpoint}
    geometry = next(iter(models.values())).geometry
    patch = geometry.patch_size
    reach = int(args.reach * patch)
    offsets = sorted({-reach, -2 * reach // 3, -reach // 3, 0, reach // 3, 2 * reach // 3, reach})
    chain = preprocess(geometry.spacing_mm, patch)
    for name in models:
        print(f"model {name}, sha256 {(sha256(Path(name)) if Path(name).is_file() else manifest(name)['sha256'])[:12]}")
    print(f"{geometry}; offsets in voxels {offsets}; mean probability on the organ's voxels\n")
    for case_id in args.cases:
        case = chain(dataset.load(case_id, tuple(args.organs)))
        image = torch.as_tensor(np.asarray(case["image"])).float()
        label = case["label"][0].numpy()
        for value, organ in enumerate(args.organs, start=1):
            truth = label == value
            if not truth.any():
                print(f"{case_id} {organ}: not in the scan")
                continue
            windows = windows_about(image, truth, patch, offsets)
            for name, model in models.items():
                channel = UNIVERSAL_TEMPLATE.index(organ)
                with torch.no_grad(), fused_window_attention(model):
                    line = []
                    for axis in "xyz":
                        values = []
                        for d in offsets:
                            if windows[(axis, d)] is None:
                                values.append("  - ")
                                continue
                            crop, organ_voxels = windows[(axis, d)]
                            p = torch.sigmoid(model(crop)[0, channel])[organ_voxels].mean().item()
                            values.append(f"{p:.2f}")
                        line.append(f"{axis}: " + " ".join(values))
                print(f"{case_id} {organ:12s} {Path(name).parent.name or name:20s} " + " | ".join(line), flush=True)


if __name__ == "__main__":
    main()
