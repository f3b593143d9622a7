"""The foundation model's shapes and the one evaluation function."""
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from fseft_lab.anatomy import UNIVERSAL_TEMPLATE
from fseft_lab.evaluate import evaluate, predict, score, to_masks
from fseft_lab.models.foundation import FoundationModel


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


def _case(label, spacing=2.0):
    affine = torch.diag(torch.tensor([spacing, spacing, spacing, 1.0]))
    return {"image": MetaTensor(torch.rand(1, *label.shape), affine=affine),
            "label": MetaTensor(torch.as_tensor(label)[None], affine=affine), "structures": ("liver", "spleen"), "case": "c0"}


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
    assert np.isnan(spleen.dice) and spleen.predicted_ml > 0
    assert (table.method == "oracle").all()


def test_prediction_of_a_volume_smaller_than_the_patch_is_padded_not_a_crash():
    model = torch.nn.Conv3d(1, 2, 1)
    logits = predict(model, torch.rand(1, 1, 20, 30, 40), patch_size=32)
    assert logits.shape == (1, 2, 20, 30, 40)


def test_masks_threshold_argmax_and_largest_component():
    logits = torch.full((1, 2, 10, 10, 10), -5.0)
    logits[0, 1, 1:4, 1:4, 1:4] = 5.0
    logits[0, 1, 7, 7, 7] = 5.0                      # a stray voxel
    assert to_masks(logits)[0, 1].sum() == 28
    assert to_masks(logits, largest_component=True)[0, 1].sum() == 27
    assert to_masks(logits, multiclass=True)[0].sum(0).eq(1).all()


def test_score_hd95_in_millimetres():
    truth = torch.zeros(1, 1, 20, 20, 20)
    truth[0, 0, 5:10, 5:10, 5:10] = 1
    shifted = torch.roll(truth, 2, dims=2)
    assert score(shifted, truth, (1.0, 1.0, 1.0))["hd95"][0] == pytest.approx(2.0)
    assert score(shifted, truth, (3.0, 1.0, 1.0))["hd95"][0] == pytest.approx(6.0)


def test_hd95_is_nan_not_inf_for_an_empty_prediction():
    truth = torch.zeros(1, 1, 10, 10, 10)
    truth[0, 0, 2:5, 2:5, 2:5] = 1
    scores = score(torch.zeros_like(truth), truth, (1.0, 1.0, 1.0))
    assert scores["dice"][0] == 0.0 and np.isnan(scores["hd95"][0])
