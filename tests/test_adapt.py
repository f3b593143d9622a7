"""The few-shot trainer on tiny synthetic volumes: cache equivalence, protocol pieces, bad input."""
import numpy as np
import pytest
import torch

from fseft_lab.adapt import AdaptConfig, adapt, check_support, plateaued, task_target
from fseft_lab.evaluate import predict, to_masks
from fseft_lab.methods import build
from fseft_lab.models.foundation import FoundationModel


def _case(seed: int, structures=("liver",), size=(72, 64, 64)) -> dict:
    """A noisy volume with one bright cube per structure (value i = structures[i - 1])."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, *size, generator=g) * 0.2
    label = torch.zeros(1, *size, dtype=torch.uint8)
    for i in range(len(structures)):
        label[:, 8 + 28 * i: 28 + 28 * i, 20:40, 20:40] = i + 1
    image[label > 0] += 0.6
    return {"image": image, "label": label, "structures": tuple(structures), "case": f"c{seed}",
            "spacing": (3.0, 3.0, 3.0)}


@pytest.fixture(scope="module")
def foundation():
    torch.manual_seed(0)
    return FoundationModel(12).eval()


def _cfg(**kw):
    return AdaptConfig(**{"epochs": 3, "crops_per_volume": 2, "crop_bank": 2, "validate_every": 0, **kw})


@pytest.mark.parametrize("method", ["linear_probe", "spatial_adapter"])
@pytest.mark.slow
def test_cached_and_uncached_training_give_the_same_weights(foundation, method):
    support = [_case(1), _case(2)]
    cached = adapt(foundation, method, support, config=_cfg(epochs=2, crop_bank=4, feature_cache=True), profile="cpu", progress=False)
    plain = adapt(foundation, method, support, config=_cfg(epochs=2, crop_bank=4, feature_cache=False), profile="cpu", progress=False)
    assert cached.cached and not plain.cached
    a, b = cached.model.classifier.state_dict(), plain.model.classifier.state_dict()
    torch.manual_seed(0)  # adapt() seeds new weights with config.seed = 0
    start = build(foundation, method, ["liver"]).classifier.state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a)  # it trained
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-4), key
    assert np.allclose(cached.curve["loss"], plain.curve["loss"], atol=1e-4)


@pytest.mark.slow
def test_cached_encoder_states_train_the_decoder_as_the_whole_network_does(foundation, method="linear_probe"):
    """Decoder fine-tuning with a frozen Swin encoder: its hidden states are cached per crop, and a
    step runs only the decoder and head. Same bank, same steps: the same losses and the same update
    (Adam turns float rounding in near-zero gradients into lr-sized steps, so the update is compared
    as a whole, not weight by weight)."""
    from fseft_lab.crop_bank import cache_level

    config = dict(epochs=2, crop_bank=4, lr=1e-3)
    runs = [adapt(foundation, method, [_case(1)], decoder="fine-tuned", config=_cfg(**config, feature_cache=cache),
                  profile="cpu", progress=False) for cache in (True, False)]
    cached, plain = runs
    assert cache_level(cached.model) == "encoder" and cached.cached and not plain.cached
    assert np.allclose(cached.curve["loss"], plain.curve["loss"], atol=1e-4)
    start = build(foundation, method, ["liver"], decoder="fine-tuned").state_dict()
    a, b = ({k: v for k, v in r.model.state_dict().items() if k.startswith("decoder")} for r in runs)
    update_a = torch.cat([(a[k] - start[k]).flatten() for k in a])
    update_b = torch.cat([(b[k] - start[k]).flatten() for k in a])
    assert update_a.norm() > 0                                              # the decoder trained
    assert (update_a - update_b).norm() < 0.05 * update_a.norm()
    assert cache_level(build(foundation, "lora", ["liver"], decoder="fine-tuned")) is None   # its encoder trains


def test_training_lowers_the_loss_and_leaves_the_foundation_model_alone(foundation):
    before = {k: v.clone() for k, v in foundation.state_dict().items()}
    result = adapt(foundation, "linear_probe", [_case(1)], config=_cfg(epochs=8, validate_every=4),
                   validation=[_case(3)], profile="cpu", progress=False)
    assert list(result.curve["epoch"]) == list(range(8))
    assert result.curve["dice_loss"].iloc[-3:].mean() < result.curve["dice_loss"].iloc[:3].mean()
    assert result.curve["val_dice"].notna().sum() == 2
    # the last val_dice is the validation volume's Dice of the trained model, counted here by hand
    case = _case(3)
    mask = to_masks(predict(result.model, case["image"][None], 64), largest_component=True)[0, 0].bool()
    truth = case["label"][0] == 1
    by_hand = 2 * (mask & truth).sum().item() / (mask.sum().item() + truth.sum().item())
    assert result.curve["val_dice"].iloc[-1] == pytest.approx(by_hand, abs=1e-6)
    assert result.lr == 1e-2 and result.trainable == 13 and result.peak_memory_mb > 0
    assert all(torch.equal(v, before[k]) for k, v in foundation.state_dict().items())


@pytest.mark.slow
def test_multiclass_task_trains_a_softmax_head_with_background(foundation):
    support = [_case(1, ("liver", "spleen"))]
    result = adapt(foundation, "linear_probe", support, multiclass=True, config=_cfg(epochs=2, validate_every=1),
                   validation=[_case(2, ("liver", "spleen"))], profile="cpu", progress=False)
    assert result.model.task_structures == ("background", "liver", "spleen")
    assert result.curve["val_dice"].notna().all()


def test_task_target_channels():
    label = torch.tensor([0, 1, 2, 2]).view(1, 1, 4, 1, 1)
    assert task_target(label, 2, False)[0, :, :, 0, 0].tolist() == [[0, 1, 0, 0], [0, 0, 1, 1]]
    assert task_target(label, 2, True)[0, :, :, 0, 0].tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]]


def test_plateau_rule_follows_the_paper():
    cfg = AdaptConfig()
    assert not plateaued([0.5] * 30, cfg)                      # never before epoch 31
    assert plateaued([0.5] * 31, cfg)                          # flat: stop
    assert not plateaued(list(np.linspace(1, 0.5, 40)), cfg)   # still improving
    assert not plateaued([0.5] * 40, AdaptConfig(stop_patience=0))


@pytest.mark.slow
def test_early_stopping_ends_training_and_the_progress_bar_says_why(foundation, capsys):
    cfg = _cfg(epochs=10, lr=1e-12, stop_window=2, stop_patience=2, stop_start=4)
    result = adapt(foundation, "linear_probe", [_case(1)], config=cfg, profile="cpu", progress=True)
    assert result.stopped_early and result.epochs_run == 4
    bar = capsys.readouterr().err.split("\r")[-1]   # the bar's last state
    assert "4/10" in bar and "stopped early at epoch 4: the loss plateaued" in bar, bar


@pytest.mark.slow
def test_a_run_to_the_last_epoch_does_not_claim_an_early_stop(foundation, capsys):
    adapt(foundation, "linear_probe", [_case(1)], config=_cfg(epochs=3), profile="cpu", progress=True)
    bar = capsys.readouterr().err.split("\r")[-1]
    assert "3/3" in bar and "stopped early" not in bar, bar


def test_zero_shot_trains_nothing(foundation):
    result = adapt(foundation, "zero_shot", [_case(1)], config=_cfg(), profile="cpu", progress=False)
    assert result.epochs_run == 0 and result.trainable == 0 and result.curve.empty


def test_bad_support_sets_are_refused(foundation):
    empty = _case(1)
    empty["label"] = torch.zeros_like(empty["label"])
    with pytest.raises(ValueError, match="no support volume shows 'liver'.*c1"):
        check_support([empty])
    with pytest.raises(ValueError, match="support set is empty"):
        check_support([])
    with pytest.raises(ValueError, match="labelled for"):
        check_support([_case(1), _case(2, ("spleen",))])
    with pytest.raises(ValueError, match="feature_cache needs a frozen encoder"):
        adapt(foundation, "lora", [_case(1)], config=_cfg(feature_cache=True), profile="cpu", progress=False)
    with pytest.raises(ValueError, match="pos_fraction=1.5"):
        adapt(foundation, "linear_probe", [_case(1)], config=_cfg(pos_fraction=1.5), profile="cpu", progress=False)


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_learning_rate(foundation):
    broken = _case(1)
    broken["image"] = torch.full_like(broken["image"], float("nan"))
    with pytest.raises(FloatingPointError, match=r"epoch 0, step 0, learning rate 1\.00e-02"):
        adapt(foundation, "linear_probe", [broken], config=_cfg(feature_cache=False), profile="cpu", progress=False)


def test_crops_are_stratified_positive_and_negative():
    from fseft_lab.crop_bank import draw_crops

    case = _case(1)
    for seed in range(3):
        images, labels = draw_crops(case, 2, 64, 0.5, seed)
        assert images.shape == (2, 1, 64, 64, 64)
        assert labels[0].sum() > 0                     # the positive crop comes first and shows the structure
    _, labels = draw_crops(_case(1, size=(192, 64, 64)), 8, 64, 0.5, 0)   # a volume where crops can miss it
    shows = [bool(crop.sum() > 0) for crop in labels]
    assert all(shows[:4]) and not all(shows[4:])


def test_bank_picks_are_stratified():
    from fseft_lab.crop_bank import _pick

    rng = np.random.default_rng(0)
    for _ in range(20):
        picked = _pick(rng, 16, 2, 0.5).tolist()        # bank: 8 positive crops first, then 8 negative
        assert len(picked) == 2 and picked[0] < 8 <= picked[1]
    assert sorted(_pick(rng, 4, 4, 0.5).tolist()) == [0, 1, 2, 3]


def test_crops_picked_from_a_bank_keep_their_own_labels():
    """Regression: the inputs and the labels of a step were once picked with two draws of indices,
    so frozen-trunk methods trained on one crop's features against another crop's labels."""
    from fseft_lab.crop_bank import pick_from_bank

    entries = torch.arange(16.0).view(16, 1, 1, 1, 1)                                  # entry i holds i
    bank = ((entries, -entries), torch.arange(16).view(16, 1, 1, 1, 1))   # two inputs per crop (image, state)
    rng = np.random.default_rng(0)
    for _ in range(20):
        (inputs, states), labels = pick_from_bank(bank, rng, 2, 0.5)
        assert inputs.flatten().long().tolist() == labels.flatten().tolist() == (-states).flatten().long().tolist()
        assert inputs[0].item() < 8 <= inputs[1].item()         # one positive (first half), one negative


@pytest.mark.slow
def test_a_shared_bank_cache_computes_the_trunk_once_and_changes_nothing(foundation):
    shared = {}
    first = adapt(foundation, "linear_probe", [_case(1)], config=_cfg(), bank_cache=shared, profile="cpu", progress=False)
    assert len(shared) == 1
    (key, features), = shared.items()
    second = adapt(foundation, "adapter_1x1", [_case(1)], config=_cfg(), bank_cache=shared, profile="cpu", progress=False)
    assert len(shared) == 1 and shared[key] is features            # reused, not recomputed
    alone = adapt(foundation, "adapter_1x1", [_case(1)], config=_cfg(), profile="cpu", progress=False)
    for name, value in alone.model.classifier.state_dict().items():
        assert torch.equal(second.model.classifier.state_dict()[name], value), name
    assert first.cached and second.cached


def test_the_default_bank_holds_no_more_crops_than_the_epochs_draw(foundation):
    """A bank is 8 x crops_per_volume crops, each a pass through the frozen trunk: one epoch of two
    crops needs two, not sixteen (a 1-epoch run on a user's scans cached 16 crops per volume)."""
    shared = {}
    adapt(foundation, "linear_probe", [_case(1)], config=AdaptConfig(epochs=1, crops_per_volume=2, validate_every=0),
          bank_cache=shared, profile="cpu", progress=False)
    [(inputs,)] = shared.values()
    assert inputs.shape[0] == 2
