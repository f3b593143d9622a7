"""The foundation model's shapes and the one evaluation function."""
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from fseft_lab.anatomy import UNIVERSAL_TEMPLATE
from fseft_lab.evaluate import evaluate, fused_window_attention, one_piece_channels, predict, score, to_masks
from fseft_lab.models.foundation import FoundationModel


@pytest.mark.slow
def test_foundation_model_shapes_and_head_name():
    model = FoundationModel(feature_size=12).eval()
    x = torch.rand(1, 1, 64, 64, 64)
    with torch.no_grad():
        features, logits = model.features(x), model(x)
    assert features.shape == (1, 12, 64, 64, 64)
    assert logits.shape == (1, len(UNIVERSAL_TEMPLATE), 64, 64, 64)
    assert torch.allclose(logits, model.classifier(features), atol=1e-5)
    keys = model.state_dict().keys()
    assert "classifier.weight" in keys and any(k.startswith("swinViT.") for k in keys)
    assert not any(k.startswith("out.") for k in keys)


def test_feature_size_must_suit_the_attention_heads():
    with pytest.raises(ValueError, match="feature_size=10"):
        FoundationModel(feature_size=10)


class Oracle(torch.nn.Module):
    """Returns +/-10 logits from a fixed mask, whatever the input: a perfect model."""

    def __init__(self, masks):
        super().__init__()
        self.register_buffer("masks", masks)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return (self.masks * 20 - 10).expand(x.shape[0], -1, -1, -1, -1)[..., : x.shape[2], : x.shape[3], : x.shape[4]]


def _case(label, spacing=2.0, structures=("liver", "spleen")):
    affine = torch.diag(torch.tensor([spacing, spacing, spacing, 1.0]))
    return {"image": MetaTensor(torch.rand(1, *label.shape), affine=affine),
            "label": MetaTensor(torch.as_tensor(label)[None], affine=affine), "structures": structures, "case": "c0"}


def test_evaluate_scores_a_perfect_and_an_empty_prediction():
    label = np.zeros((32, 32, 32), np.uint8)
    label[4:20, 4:20, 4:20] = 1                     # liver present; spleen absent from the truth
    masks = torch.zeros(1, 3, 32, 32, 32)
    masks[0, 1] = torch.as_tensor(label == 1)       # channel 1 = liver, perfectly predicted
    masks[0, 2, 25:30, 25:30, 25:30] = 1            # channel 2 = spleen, predicted where there is none
    table = evaluate(Oracle(masks), [_case(label)], channels=[1, 2], patch_size=32, progress=False, method="oracle")
    liver = table.set_index("structure").loc["liver"]
    assert liver.dice == pytest.approx(1.0) and liver.hd95 == pytest.approx(0.0) and liver.nsd == pytest.approx(1.0)
    assert liver.truth_ml == pytest.approx(16 ** 3 * 8 / 1000)
    spleen = table.set_index("structure").loc["spleen"]
    assert np.isnan(spleen.dice) and np.isnan(spleen.hd95)
    assert spleen.false_positive_ml == pytest.approx(5 ** 3 * 8 / 1000) and liver.false_positive_ml == 0
    assert not table.missed.any()
    assert (table.method == "oracle").all()


def test_prediction_of_a_volume_smaller_than_the_patch_is_padded_not_a_crash():
    model = torch.nn.Conv3d(1, 2, 1)
    logits = predict(model, torch.rand(1, 1, 20, 30, 40), patch_size=32)
    assert logits.shape == (1, 2, 20, 30, 40)


@pytest.mark.slow
def test_inference_uses_fused_window_attention_and_gives_the_explicit_attentions_logits():
    torch.manual_seed(0)
    model = FoundationModel(12).eval()
    layers = [m for m in model.modules() if hasattr(m, "use_flash_attention")]
    assert len(layers) == 8 and not any(m.use_flash_attention for m in layers)     # one per Swin block
    seen = []
    layers[0].register_forward_pre_hook(lambda m, args: seen.append(m.use_flash_attention))
    image = torch.randn(1, 1, 40, 72, 64)                  # several overlapping windows, one padded
    fused = predict(model, image, 64)
    assert seen and all(seen), "predict ran the explicit attention"
    assert not any(m.use_flash_attention for m in layers), "predict left the fused attention switched on"
    seen.clear()
    from monai.inferers import sliding_window_inference
    with torch.no_grad():
        explicit = sliding_window_inference(image, (64,) * 3, 2, model, overlap=0.25, mode="gaussian")
    assert seen and not any(seen)
    assert torch.allclose(fused, explicit, atol=1e-4), float((fused - explicit).abs().max())
    with pytest.raises(RuntimeError), fused_window_attention(model):
        raise RuntimeError("an error inside")
    assert not any(m.use_flash_attention for m in layers), "an error left the fused attention on"


def test_masks_threshold_argmax_and_largest_component():
    logits = torch.full((1, 2, 10, 10, 10), -5.0)
    logits[0, 1, 1:4, 1:4, 1:4] = 5.0
    logits[0, 1, 7, 7, 7] = 5.0                      # a stray voxel
    assert to_masks(logits)[0, 1].sum() == 28
    assert to_masks(logits, largest_component=True)[0, 1].sum() == 27
    assert to_masks(logits, largest_component=[1])[0, 1].sum() == 27   # only the channels listed
    assert to_masks(logits, largest_component=[0])[0, 1].sum() == 28
    assert to_masks(logits, multiclass=True)[0].sum(0).eq(1).all()


def _liver_and_two_tumours():
    """Truth: a liver block and two separate tumours. Prediction: both right, plus a stray liver
    island far from the liver (the zero-shot model's islands)."""
    label = np.zeros((32, 32, 32), np.uint8)
    label[2:14, 2:14, 2:14] = 1                                   # liver
    label[20:24, 20:24, 20:24] = 2                                # tumour 1
    label[26:30, 4:8, 26:30] = 2                                  # tumour 2, apart from the first
    islands = np.zeros_like(label)
    islands[24:29, 26:31, 2:7] = 1
    return label, islands


@pytest.mark.parametrize("multiclass", [False, True])
def test_one_piece_structures_lose_their_islands_and_lesions_keep_every_piece(multiclass):
    label, island = _liver_and_two_tumours()
    structures = ("liver", "liver_tumor")
    masks = torch.zeros(1, 3, 32, 32, 32)
    masks[0, 1] = torch.as_tensor((label == 1) | (island == 1))   # channel 1: liver + a stray island
    masks[0, 2] = torch.as_tensor(label == 2)                     # channel 2: both tumours
    masks[0, 0] = 1 - masks[0, 1:].amax(0)                        # background, for the arg-max
    case = _case(label, spacing=2.0, structures=structures)
    kw = {"channels": [1, 2], "patch_size": 32, "multiclass": multiclass, "progress": False}
    cleaned = evaluate(Oracle(masks), [case], **kw).set_index("structure")
    raw = evaluate(Oracle(masks), [case], largest_component=False, **kw).set_index("structure")
    assert cleaned.loc["liver", "dice"] == pytest.approx(1.0) and cleaned.loc["liver", "hd95"] == pytest.approx(0.0)
    assert raw.loc["liver", "dice"] < 1.0 and raw.loc["liver", "hd95"] > 0.0
    assert list(cleaned.post_processing) == ["largest component", "none"]
    assert list(raw.post_processing) == ["none", "none"]
    # both tumours kept: the whole truth, 2 x 4^3 voxels of 8 mm^3
    assert cleaned.loc["liver_tumor", "dice"] == pytest.approx(1.0)
    assert cleaned.loc["liver_tumor", "predicted_ml"] == pytest.approx(2 * 64 * 8 / 1000)


def test_one_piece_channels_skip_background_and_lesions():
    assert one_piece_channels(("background", "liver", "kidney_cyst", "spleen")) == [1, 3]
    assert one_piece_channels(("liver_tumor",)) == []
    assert one_piece_channels(("heart", "aorta")) == [0]  # a v2 folder's whole heart; the aorta may leave and re-enter a slab


def test_score_hd95_in_millimetres():
    truth = torch.zeros(1, 1, 20, 20, 20)
    truth[0, 0, 5:10, 5:10, 5:10] = 1
    shifted = torch.roll(truth, 2, dims=2)
    assert score(shifted, truth, (1.0, 1.0, 1.0))["hd95"][0] == pytest.approx(2.0)
    assert score(shifted, truth, (3.0, 1.0, 1.0))["hd95"][0] == pytest.approx(6.0)


def test_a_missed_structure_scores_dice_0_and_the_volume_diagonal_as_hd95():
    truth = torch.zeros(1, 2, 10, 20, 30)
    truth[0, :, 2:5, 2:5, 2:5] = 1
    masks = truth.clone()
    masks[0, 1] = 0                                      # channel 1 missed: an empty prediction
    scores = score(masks, truth, (1.0, 2.0, 3.0))
    diagonal = (10 ** 2 + 40 ** 2 + 90 ** 2) ** 0.5     # mm
    assert scores["dice"].tolist() == [1.0, 0.0] and scores["nsd"][1] == 0.0
    assert scores["hd95"][0] == 0.0 and scores["hd95"][1] == pytest.approx(diagonal)
    assert scores["missed"].tolist() == [False, True]


def test_evaluate_counts_a_missed_structure_and_needs_a_spacing():
    label = np.zeros((32, 32, 32), np.uint8)
    label[4:20, 4:20, 4:20] = 1                          # liver in the truth, never predicted
    label[24:28, 24:28, 24:28] = 2
    masks = torch.zeros(1, 3, 32, 32, 32)
    masks[0, 2] = torch.as_tensor(label == 2)
    table = evaluate(Oracle(masks), [_case(label)], channels=[1, 2], patch_size=32, progress=False)
    liver = table.set_index("structure").loc["liver"]
    assert liver.missed and liver.dice == 0.0 and liver.hd95 == pytest.approx(32 * 2.0 * 3 ** 0.5)
    assert table.missed.sum() == 1
    case = _case(label)
    case["image"] = case["image"].as_tensor()           # a plain tensor: no pixdim
    with pytest.raises(ValueError, match="has no voxel spacing"):
        evaluate(Oracle(masks), [case], channels=[1, 2], patch_size=32, progress=False)
    scored = evaluate(Oracle(masks), [{**case, "spacing": (2.0, 2.0, 2.0)}], channels=[1, 2], patch_size=32, progress=False)
    assert scored.hd95.tolist() == table.hd95.tolist()
    with pytest.raises(ValueError, match="three positive numbers"):
        score(masks[:, 1:], masks[:, 1:], (1.0, 1.0))


@pytest.mark.parametrize("overlap, covered", [(0.25, False), (None, True)])
def test_default_overlap_puts_every_voxel_near_a_window_centre_across_the_slice(overlap, covered):
    """A model that sees only what lies in its window's central half (within a quarter patch of
    the centre, in x and y) still finds every voxel at the default overlap; at a quarter's overlap
    some columns fall between two windows' central halves, where the spleen of a wide body fell."""
    patch, width = 16, 37                      # windows at 0, 12 and 21 at overlap 0.25: x 12-13 is in no central half

    def central_half(x):
        out = torch.zeros_like(x)
        out[..., patch // 4:-patch // 4, patch // 4:-patch // 4, :] = 1.0
        return out

    options = {} if overlap is None else {"overlap": overlap}
    seen = predict(central_half, torch.zeros(1, 1, width, width, patch), patch, **options)[0, 0]
    inner = seen[patch // 4:width - patch // 4, patch // 4:width - patch // 4]
    assert bool((inner > 0).all()) == covered
