"""Transform chains (fseft_lab.data.transforms) and few-shot splits (fseft_lab.data.fewshot)."""
import numpy as np
import pytest
import torch

from fseft_lab.anatomy import UNIVERSAL_TEMPLATE, template_index
from fseft_lab.data.fewshot import (
    MIN_SUPPORT_ML,
    Extent,
    FewShotSplit,
    default_num_test,
    extents,
    few_shot_split,
    leave_one_out,
    not_a_support,
)
from fseft_lab.data.layouts import export_phantom
from fseft_lab.data.transforms import UniversalTargetd, preprocess, training_crops

STRUCTURES = ["liver", "heart_myocardium", "aorta", "kidney_left"]  # heart_myocardium: novel, not in the head


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return export_phantom(tmp_path_factory.mktemp("tf") / "ts", "totalsegmentator", cases=1, num_test=0,
                          spacing=6.0, progress=False)


@pytest.fixture()
def case(dataset):
    return dataset.load(dataset.cases[0], STRUCTURES)


# ----------------------------------------------------------------------------- preprocess
def test_preprocess_resamples_windows_and_keeps_labels(case):
    assert case["image"].pixdim.tolist() == [6.0, 6.0, 6.0]
    before_values = set(torch.unique(case["label"]).tolist())
    assert before_values == {0, 1, 2, 3, 4}
    out = preprocess(spacing_mm=7.5)(dict(case))
    for key in ("image", "label"):
        assert np.allclose(out[key].pixdim.tolist(), [7.5] * 3), key
        assert np.allclose(np.abs(np.diag(out[key].affine.numpy())[:3]), 7.5), key
    image = out["image"]
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert image.min() == 0.0 and image.max() == 1.0       # air and bone hit the window's ends
    assert set(torch.unique(out["label"]).tolist()) == before_values
    assert out["image"].shape == out["label"].shape
    # without the body crop, the whole FOV resampled from 6 mm to 7.5 mm
    full = preprocess(spacing_mm=7.5, crop_foreground=False)(dict(case))
    for axis in (1, 2, 3):
        assert abs(full["image"].shape[axis] - case["image"].shape[axis] * 6.0 / 7.5) <= 1
    assert all(c <= f for c, f in zip(image.shape, full["image"].shape))
    assert image.shape[1] < full["image"].shape[1]


def test_preprocess_window_is_linear():
    from monai.data import MetaTensor
    hu = torch.tensor([-1000.0, -175.0, 37.5, 250.0, 1000.0]).reshape(1, 5, 1, 1)
    d = {"image": MetaTensor(hu.clone(), affine=torch.eye(4)), "label": MetaTensor(torch.zeros_like(hu), affine=torch.eye(4))}
    out = preprocess(spacing_mm=1.0, crop_foreground=False)(d)
    assert torch.allclose(out["image"].flatten(), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]), atol=1e-5)


def test_preprocess_pads_to_the_patch(case):
    unpadded = preprocess(spacing_mm=7.5)(dict(case))
    padded = preprocess(spacing_mm=7.5, patch_size=64)(dict(case))
    before = unpadded["image"].shape[1:]
    assert min(before) < 64  # the test means something only if some side needs padding
    assert tuple(padded["image"].shape[1:]) == tuple(max(s, 64) for s in before)
    assert padded["label"].shape == padded["image"].shape
    assert padded["image"].min() >= 0.0 and padded["image"].max() <= 1.0
    # padding adds background only
    for v in (1, 2, 3, 4):
        assert (padded["label"] == v).sum() == (unpadded["label"] == v).sum()


# ----------------------------------------------------------------------------- crops
def test_training_crops_shape_and_foreground(case):
    d = preprocess(spacing_mm=7.5, patch_size=32)(dict(case))
    crops = training_crops(32, num_samples=5, pos=1.0, neg=0.0)
    crops.set_random_state(0)
    out = crops(d)
    assert len(out) == 5
    for c in out:
        assert tuple(c["image"].shape) == (1, 32, 32, 32)
        assert tuple(c["label"].shape) == (1, 32, 32, 32)
        assert (c["label"] > 0).any()


def test_training_crops_reject_bad_patch_sizes():
    for bad in (48, 50, 100):
        with pytest.raises(ValueError, match=f"patch_size={bad}.*multiple of 32"):
            training_crops(bad, num_samples=2)


def test_training_crops_default_to_half_centred_on_the_structure():
    """pos = neg = 1: as many crops centred on a structure voxel as on a background one. The image
    holds each voxel's own index, so a crop's middle voxel says where the crop was centred."""
    from monai.data import MetaTensor

    side, n = 96, 64
    image = torch.arange(side**3, dtype=torch.float32).reshape(1, side, side, side)   # (1, X, Y, Z) voxel indices
    label = torch.zeros(1, side, side, side)
    label[:, 40:56, 40:56, 40:56] = 1                      # 0.5 % of the volume, away from the edges
    crops = training_crops(64, num_samples=n)
    crops.set_random_state(0)
    out = crops({"image": MetaTensor(image), "label": MetaTensor(label)})
    assert len(out) == n
    assert all(tuple(c[k].shape) == (1, 64, 64, 64) for c in out for k in ("image", "label"))
    for c in out:                                           # each crop is the image's own voxels, label aligned
        first = np.unravel_index(int(c["image"][0, 0, 0, 0]), (side,) * 3)
        window = tuple(slice(f, f + 64) for f in first)
        assert torch.equal(c["image"][0], image[0][window]) and torch.equal(c["label"][0], label[0][window])
    centred = [label.flatten()[int(c["image"][0, 32, 32, 32])].item() == 1 for c in out]
    # Binomial(64, 1/2): 32 +- 4; a share outside 20-44 (3 standard deviations) is not 1:1
    assert 20 <= sum(centred) <= 44, f"{sum(centred)} of {n} crops centred on the structure, expected about half"
    always = training_crops(64, num_samples=8, pos=1.0, neg=0.0)
    always.set_random_state(0)
    assert all(label.flatten()[int(c["image"][0, 32, 32, 32])] == 1
               for c in always({"image": MetaTensor(image), "label": MetaTensor(label)}))


# ----------------------------------------------------------------------------- targets
def test_universal_target(case):
    d = UniversalTargetd()(dict(case))
    label = case["label"][0]
    assert tuple(d["target"].shape) == (29, *label.shape)
    assert tuple(d["annotated"].shape) == (29,)
    expected = {template_index(s) for s in STRUCTURES if s in UNIVERSAL_TEMPLATE}
    assert set(torch.nonzero(d["annotated"]).flatten().tolist()) == expected
    assert expected == {template_index("liver"), template_index("aorta"), template_index("kidney_left")}
    for value, s in enumerate(STRUCTURES, start=1):
        if s in UNIVERSAL_TEMPLATE:
            assert torch.equal(d["target"][template_index(s)], (label == value).float()), s
            assert d["target"][template_index(s)].sum() > 0, s
    others = [c for c in range(29) if c not in expected]
    assert d["target"][others].sum() == 0
    assert d["target"].sum(0).max() <= 1  # one structure per voxel
    assert case["label"] is d["label"]    # input left alone



# ----------------------------------------------------------------------------- few-shot splits
POOL = [f"c{i:02d}" for i in range(25)]  # 20 in the pool after the last 5 go to test


def test_few_shot_split_is_reproducible_and_disjoint():
    a = few_shot_split(POOL, k=3, seed=4)
    b = few_shot_split(list(reversed(POOL)), k=3, seed=4)
    assert a == b
    assert isinstance(a, FewShotSplit) and (a.k, a.seed) == (3, 4)
    assert len(a.support) == 3 and len(a.validation) == 1
    assert not set(a.support) & set(a.validation)
    assert not (set(a.support) | set(a.validation)) & set(a.test)
    assert set(a.support) | set(a.validation) <= set(POOL[:20])


def test_few_shot_split_seeds_differ():
    supports = {few_shot_split(POOL, k=2, seed=s).support for s in range(6)}
    assert len(supports) > 1
    validations = {few_shot_split(POOL, k=2, seed=s).validation for s in range(6)}
    assert len(validations) > 1


def test_few_shot_split_default_test_is_last_sorted_cases():
    shuffled = list(np.random.default_rng(0).permutation(POOL))
    split = few_shot_split(shuffled, k=1, seed=0, num_test=4)
    assert split.test == tuple(sorted(POOL)[-4:])
    explicit = few_shot_split(POOL, k=1, seed=0, test=["c03", "c01"])
    assert explicit.test == ("c01", "c03")
    assert not {"c01", "c03"} & set(explicit.support + explicit.validation)


def test_few_shot_split_whole_pool():
    split = few_shot_split(POOL, k=20, seed=7)
    assert split.support == tuple(POOL[:20])
    assert split.validation == ()
    assert split.test == tuple(POOL[20:])


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3"])
def test_few_shot_split_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        few_shot_split(POOL, k=k, seed=0)


def test_few_shot_split_k_larger_than_pool():
    with pytest.raises(ValueError, match=r"num_test=5 and k=21 need 26 labelled volumes.*the task has 25"):
        few_shot_split(POOL, k=21, seed=0)
    with pytest.raises(ValueError, match=r"k=3 needs 3 labelled volumes besides the 23 test ones.*pool has 2"):
        few_shot_split(POOL, k=3, seed=0, test=POOL[2:])


def test_few_scans_split_without_scoring_or_one_at_a_time():
    five = POOL[:5]
    deploy = few_shot_split(five, k=5, seed=0, num_test=0)          # every volume is support, none scored
    assert deploy.support == tuple(five) and deploy.test == () and deploy.validation == ()
    assert [default_num_test(n) for n in (1, 2, 5, 10, 25)] == [0, 1, 2, 5, 5]
    assert few_shot_split(five, k=1, seed=0, num_test=default_num_test(5)).test == tuple(five[-2:])
    folds = leave_one_out(five)
    assert folds == [(c,) for c in five]
    for fold in folds:
        split = few_shot_split(five, k=4, seed=0, test=list(fold))
        assert split.test == fold and set(split.support) == set(five) - set(fold)
    with pytest.raises(ValueError, match=r"num_test=-1 must be a whole number >= 0"):
        few_shot_split(five, k=1, seed=0, num_test=-1)


def test_few_shot_split_bad_test_cases():
    with pytest.raises(ValueError, match="c99"):
        few_shot_split(POOL, k=1, seed=0, test=["c99"])
    with pytest.raises(ValueError, match="num_test=25"):
        few_shot_split(POOL, k=1, seed=0, num_test=25)
    assert few_shot_split(POOL, k=np.int64(2), seed=0).k == 2


# ----------------------------------------------------------------------------- the support rule
def test_extents_measure_volume_and_whether_the_scan_cuts_a_structure():
    label = np.zeros((6, 6, 8), np.uint8)
    label[1:3, 1:3, 0:2] = 1          # touches the first slice: cut
    label[2:5, 2:5, 3:5] = 2          # inside the scan
    label[0, 0, 7] = 3                # one voxel on the last slice
    shown = extents(label[None], voxel_ml=0.5, structures=["liver", "spleen", "aorta", "pancreas"])
    assert shown == {"liver": Extent(4.0, True), "spleen": Extent(9.0, False), "aorta": Extent(0.5, True),
                     "pancreas": Extent(0.0, False)}


def test_a_support_shows_every_structure_whole():
    whole = Extent(1500.0, cut=False)
    assert not_a_support({"liver": whole, "spleen": Extent(200.0, False)}) is None
    assert not_a_support({"liver": Extent(10.0, cut=True)}) == "liver touches the end of the scan (10.0 mL shown)"
    assert "spleen has 0.0 mL" in not_a_support({"liver": whole, "spleen": Extent(0.0, False)})   # absent
    assert "below 1 mL" in not_a_support({"adrenal_gland_left": Extent(MIN_SUPPORT_ML / 2, False)})  # a speck
    assert not_a_support({"aorta": Extent(80.0, cut=True), "esophagus": Extent(20.0, cut=True)}) is None  # tubes run on


def test_supports_restrict_the_draw_but_not_the_test_set():
    allowed = POOL[3:8]
    for seed in range(20):
        split = few_shot_split(POOL, k=2, seed=seed, supports=allowed)
        assert set(split.support + split.validation) <= set(allowed)
        assert split.test == tuple(POOL[20:])
    with pytest.raises(ValueError, match=r"k=1 needs 1 labelled volumes.*pool has 0 .*20 more show a structure cut"):
        few_shot_split(POOL, k=1, seed=0, supports=POOL[21:])


def test_a_sliver_is_never_drawn_as_support_but_stays_a_test_volume(tmp_path):
    from fseft_lab.experiments import case_extents, split_for

    # population seed 0: s0002 is a thorax scan whose liver is a 14 mL sliver on its last slices
    ts = export_phantom(tmp_path / "ts", "totalsegmentator", cases=4, num_test=1, seed=0, spacing=6.0, progress=False)
    assert case_extents(ts, "s0002", ("liver",))["liver"].cut
    drawn = {c for seed in range(12) for c in (lambda s: s.support + s.validation)(split_for(ts, "liver", 1, seed))}
    assert drawn == {"s0000", "s0001"}
    assert "s0002" in split_for(ts, "liver", 1, 0, test_split=["s0002"]).test   # scored when asked, never learnt from
    assert any("s0002" in split_for(ts, "liver", 1, s, whole=False).support for s in range(12))  # without the rule
