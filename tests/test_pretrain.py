"""Partial-label pre-training: the masked loss, the schedule, resume equivalence and DDP."""
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from monai.data import MetaTensor

from fseft_lab.data.augment import CONTRAST_SHIFT
from fseft_lab.models.foundation import FoundationModel
from fseft_lab.pretrain import PretrainConfig, draw_batch, half_precision, masked_partial_label_loss, pretrain, warmup_cosine


def test_unannotated_classes_get_no_gradient_and_do_not_change_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    target = (torch.rand(2, 4, 8, 8, 8) > 0.7).float()
    annotated = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    loss, dice, bce = masked_partial_label_loss(logits, target, annotated)
    loss.backward()
    for b in range(2):
        for c in range(4):
            grad = logits.grad[b, c].abs().sum().item()
            assert (grad == 0.0) == (annotated[b, c] == 0), (b, c, grad)
    # changing an unannotated channel's logits or target changes nothing
    other_logits, other_target = logits.detach().clone(), target.clone()
    other_logits[0, 1] += 5.0
    other_target[1, 0] = 1.0 - other_target[1, 0]
    assert torch.allclose(masked_partial_label_loss(other_logits, other_target, annotated)[0], loss.detach())
    assert loss.item() == pytest.approx(dice.item() + bce.item(), rel=1e-6)


def test_dice_part_is_zero_for_a_perfect_confident_prediction():
    target = torch.zeros(1, 2, 8, 8, 8)
    target[0, 0, 2:5, 2:5, 2:5] = 1.0
    logits = (target * 2 - 1) * 30.0
    _, dice, bce = masked_partial_label_loss(logits, target, torch.ones(1, 2))
    assert dice.item() < 1e-3 and bce.item() < 1e-6


def test_warmup_then_cosine():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.0)


def _tiny_sources():
    """Two 'datasets' of one synthetic 64^3 case each, labelling different structures."""
    rng = np.random.default_rng(0)
    data = []
    for structures in (("liver", "spleen"), ("kidney_left",)):
        label = np.zeros((1, 64, 64, 64), np.uint8)
        label[0, 10:30, 10:30, 10:30] = 1
        if len(structures) > 1:
            label[0, 40:50, 40:55, 30:50] = 2
        image = (rng.uniform(0, 0.2, (1, 64, 64, 64)) + 0.5 * (label > 0)).astype(np.float32)
        data.append([{"image": MetaTensor(torch.from_numpy(image)), "label": MetaTensor(torch.from_numpy(label)),
                      "structures": structures, "present": sorted(set(np.unique(label).tolist()) - {0})}])
    return data


def test_batches_are_a_function_of_seed_and_step():
    data = _tiny_sources()
    a, b = draw_batch(data, 7, 0, 0, 64, 2), draw_batch(data, 7, 0, 0, 64, 2)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["annotated"], b["annotated"])
    assert a["image"].shape == (2, 1, 64, 64, 64) and a["target"].shape == (2, 29, 64, 64, 64)
    others = [draw_batch(data, s, 0, 0, 64, 2)["image"] for s in range(8, 12)]
    assert any(not torch.equal(a["image"], o) for o in others)


def test_contrast_augmentation_shifts_each_labelled_structure_by_its_own_offset_and_nothing_else():
    data = _tiny_sources()
    for step in range(6):
        plain = draw_batch(data, step, 0, 0, 64, 2)
        shifted = draw_batch(data, step, 0, 0, 64, 2, contrast=1.0)
        assert torch.equal(plain["target"], shifted["target"])  # same crops: the extra draws come last
        diff = (shifted["image"] - plain["image"])[:, 0]
        for b in range(2):
            labelled = [c for c in plain["annotated"][b].nonzero().flatten().tolist() if plain["target"][b, c].any()]
            outside = torch.ones_like(diff[b], dtype=torch.bool)
            for c in labelled:
                inside = plain["target"][b, c] > 0
                offsets = diff[b][inside]
                assert torch.allclose(offsets, offsets[0].expand_as(offsets), atol=1e-6)
                assert CONTRAST_SHIFT[0] - 1e-6 <= offsets[0] <= CONTRAST_SHIFT[1] + 1e-6
                outside &= ~inside
            assert diff[b][outside].abs().max() == 0
    with pytest.raises(ValueError, match="contrast_aug=1.5"):
        pretrain(PretrainConfig(out=Path("unused"), steps=1, contrast_aug=1.5), data=data, progress=False)


def test_phase_augmentation_darkens_whole_crops_and_changes_no_other_draw():
    data = _tiny_sources()
    for source in data:  # unlabelled tissue brighter than plain soft tissue, as enhanced neighbours are
        for case in source:
            case["image"] = case["image"] + 0.4
    changed = unchanged = 0
    for step in range(8):
        plain = draw_batch(data, step, 0, 0, 64, 2, contrast=0.5)
        phased = draw_batch(data, step, 0, 0, 64, 2, contrast=0.5, phase=0.5)
        assert torch.equal(plain["target"], phased["target"])
        for b in range(2):
            diff = (plain["image"][b] - phased["image"][b])[0]
            if diff.abs().max() == 0:  # not drawn for this crop: every other draw (crop, shifts) is the same
                unchanged += 1
                continue
            changed += 1
            assert (diff >= -1e-6).all()                                 # only ever darker
            background = plain["target"][b].sum(0) == 0
            assert (diff[background] > 1e-3).any()                       # the organ's neighbours too
    assert changed >= 3 and unchanged >= 3
    with pytest.raises(ValueError, match="phase_aug=-0.1"):
        pretrain(PretrainConfig(out=Path("unused"), steps=1, phase_aug=-0.1), data=data, progress=False)


def test_negatives_set_the_share_of_crops_centred_off_the_organs():
    data = _tiny_sources()

    def labelled_centres(negatives):  # 16^3 crops of a 64^3 volume: the centre voxel is (8, 8, 8)
        batches = [draw_batch(data, s, 0, 0, 16, 2, negatives=negatives)["target"] for s in range(40)]
        return torch.cat([b[:, :, 8, 8, 8].any(1) for b in batches]).float().mean().item()

    assert labelled_centres(0.0) == 1.0
    assert labelled_centres(0.9) < 0.3
    unlabelled = [[{**data[1][0], "label": data[1][0]["label"] * 0, "present": []}]]  # nothing to centre on
    assert not draw_batch(unlabelled, 0, 0, 0, 16, 2, negatives=0.0)["target"].any()
    with pytest.raises(ValueError, match="negatives=1.0"):
        pretrain(PretrainConfig(out=Path("unused"), steps=1, negatives=1.0), data=data, progress=False)


def test_hard_negatives_centre_the_negative_crops_on_the_other_labelled_structures():
    data = _tiny_sources()

    def labelled_centres(source, hard):  # the share of crops whose centre voxel is labelled
        batches = [draw_batch(source, s, 0, 0, 16, 2, "structures", negatives=0.9, hard=hard)["target"]
                   for s in range(40)]
        return torch.cat([b[:, :, 8, 8, 8].any(1) for b in batches]).float().mean().item()

    assert labelled_centres(data[:1], 0.0) < 0.3      # liver and spleen: negatives fall on unlabelled voxels
    assert labelled_centres(data[:1], 1.0) == 1.0     # ... or, hard, on the organ that is not the target
    assert labelled_centres(data[1:], 1.0) < 0.3      # a source with one structure has no other to centre on
    with pytest.raises(ValueError, match="hard_negatives=1.5"):
        pretrain(PretrainConfig(out=Path("unused"), steps=1, hard_negatives=1.5), data=data, progress=False)


def test_crop_shift_moves_a_crop_off_its_drawn_voxel_by_at_most_its_reach():
    """One labelled voxel: every positive crop is drawn about it. Centred, it sits at the crop's
    centre; shifted (0.45 of a 16 patch: up to 7 voxels), anywhere within 7 voxels of the centre
    per axis, never outside the crop, on the same step the same place."""
    label = np.zeros((1, 48, 48, 48), np.uint8)
    label[0, 24, 24, 24] = 1
    image = np.random.default_rng(0).uniform(0, 0.2, label.shape).astype(np.float32)
    data = [[{"image": MetaTensor(torch.from_numpy(image)), "label": MetaTensor(torch.from_numpy(label)),
              "structures": ("liver",), "present": [1]}]]

    def where(shift):  # the labelled voxel's place in each crop of 30 steps
        places = []
        for step in range(30):
            target = draw_batch(data, step, 0, 0, 16, 2, negatives=0.0, shift=shift)["target"]
            assert target.shape[-3:] == (16, 16, 16)
            places += [tuple(v.nonzero()[0].tolist()[1:]) for v in target if v.any()]
        return np.array(places)

    centred, shifted = where(0.0), where(0.45)
    assert len(centred) == 60 and (centred == 8).all()
    assert len(shifted) == 60                                  # the voxel stays inside every crop
    offsets = shifted - 8
    assert np.abs(offsets).max() == 7 and len({tuple(o) for o in offsets}) > 30
    again = draw_batch(data, 3, 0, 0, 16, 2, negatives=0.0, shift=0.45)
    assert torch.equal(again["target"], draw_batch(data, 3, 0, 0, 16, 2, negatives=0.0, shift=0.45)["target"])
    with pytest.raises(ValueError, match="crop_shift=0.5"):
        pretrain(PretrainConfig(out=Path("unused"), steps=1, crop_shift=0.5), data=data, progress=False)


@pytest.fixture
def deterministic():
    """CPU convolutions reduce in parallel; deterministic kernels make two runs bit-identical."""
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, deterministic):
    data = _tiny_sources()
    common = dict(profile="cpu", steps=4, warmup_steps=2, checkpoint_every=2, seed=3)
    straight = pretrain(PretrainConfig(out=tmp_path / "straight", **common), data=data, progress=False)
    interrupted = tmp_path / "interrupted"
    # run 2 steps of a 4-step schedule, as if killed right after the step-2 checkpoint
    state = _run_until(PretrainConfig(out=interrupted, **common), data, stop_after=2)
    assert state["step"] == 2
    # resumed with 2 background processes drawing the crops: the number of workers changes nothing
    resumed = pretrain(PretrainConfig(out=interrupted, resume=True, workers=2, **common), data=data, progress=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    log = (interrupted / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["0", "1", "2", "3"]


def _run_until(cfg, data, stop_after):
    """Run pre-training but raise right after the checkpoint of step ``stop_after``."""
    import fseft_lab.pretrain as module

    real_save = module._save_atomic

    def save_then_stop(obj, path):
        real_save(obj, path)
        if path.name == "checkpoint.pt" and obj["step"] == stop_after:
            raise KeyboardInterrupt
    module._save_atomic = save_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            pretrain(cfg, data=data, progress=False)
    finally:
        module._save_atomic = real_save
    return torch.load(cfg.out / "checkpoint.pt", weights_only=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    model = pretrain(PretrainConfig(out=out / "run", profile="cpu", steps=2, warmup_steps=1, seed=5), data=_tiny_sources(), progress=False)
    torch.save(model.state_dict(), out / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_ddp_keeps_ranks_identical(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), tmp_path), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    torch.manual_seed(5)  # the initialisation pretrain() starts from
    init = FoundationModel(12).state_dict()
    changed = 0
    for name in a:
        assert torch.equal(a[name], b[name]), name
        changed += not torch.equal(a[name], init[name])
    assert changed > 0, "the ranks did not train"


def test_half_precision_keeps_integer_buffers():
    state = FoundationModel(12).state_dict()
    half = half_precision(state)
    indexes = [k for k in state if k.endswith("relative_position_index")]
    assert indexes and all(torch.equal(half[k], state[k]) for k in indexes)
    assert max(int(state[k].max()) for k in indexes) > 2048  # beyond float16's exact integers
    assert half["classifier.weight"].dtype == torch.float16


@pytest.mark.slow
def test_resume_refuses_a_missing_checkpoint_and_changed_settings(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        pretrain(PretrainConfig(out=tmp_path / "none", resume=True, steps=2), data=_tiny_sources(), progress=False)
    run = tmp_path / "run"
    pretrain(PretrainConfig(out=run, steps=1, warmup_steps=1, checkpoint_every=1), data=_tiny_sources(), progress=False)
    with pytest.raises(ValueError, match="'lr'"):
        pretrain(PretrainConfig(out=run, steps=1, warmup_steps=1, lr=5e-4, resume=True), data=_tiny_sources(), progress=False)


def test_structure_balance_draws_rarely_labelled_structures_as_often_as_common_ones():
    from fseft_lab.pretrain import pick_case

    # source A labels liver and spleen, source B only the liver (the spleen's situation in the phantom sources)
    a = [{"structures": ("liver", "spleen"), "present": [1, 2], "case": f"a{i}"} for i in range(3)]
    b = [{"structures": ("liver",), "present": [1], "case": f"b{i}"} for i in range(3)]

    def spleen_share(balance):  # share of positive crops centred on the spleen
        picks = [pick_case([a, b], np.random.default_rng(s), balance) for s in range(400)]
        return np.mean([("spleen" in [c["structures"][v - 1] for v in values]) / len(values) for c, values in picks])

    assert abs(spleen_share("sources") - 0.25) < 0.06       # half the sources, half of their positives
    assert abs(spleen_share("structures") - 0.5) < 0.06     # one of two structures
    rng = np.random.default_rng(0)
    case, values = pick_case([a, b], rng, "sources")
    assert values == case["present"]
    with pytest.raises(ValueError, match="balance='classes'"):
        pick_case([a, b], rng, "classes")


def test_sources_exported_in_parallel_are_the_sequential_export(tmp_path):
    import nibabel as nib

    from fseft_lab.data.layouts import open_dataset
    from fseft_lab.pretrain import SOURCES, phantom_sources

    parallel = phantom_sources(tmp_path / "a", 12.0, 1, workers=2)
    sequential = phantom_sources(tmp_path / "b", 12.0, 1)
    assert list(parallel.values()) == list(sequential.values()) == list(SOURCES.values())
    for a, b in zip(parallel, sequential):
        case_a, case_b = open_dataset(a).cases[0], open_dataset(b).cases[0]
        assert (Path(a) / "dataset.json").read_text() == (Path(b) / "dataset.json").read_text()
        assert np.array_equal(nib.load(str(case_a.image)).get_fdata(), nib.load(str(case_b.image)).get_fdata())


@pytest.mark.slow
def test_zero_shot_scores_raw_and_cleaned_masks_from_one_pass_of_the_network(tmp_path, monkeypatch):
    import fseft_lab.evaluate as evaluation
    from fseft_lab.pretrain import zero_shot_phantoms
    from fseft_lab.profiles import Geometry

    torch.manual_seed(0)
    model = FoundationModel(12, geometry=Geometry(12.0, 64, 12)).eval()
    torch.nn.init.constant_(model.classifier.bias, 0.05)  # an untrained head that marks about half the voxels:
    passes = []                                           # masks in pieces, so cleaning them changes the Dice
    windows = evaluation.sliding_window_inference
    monkeypatch.setattr(evaluation, "sliding_window_inference", lambda *a, **k: passes.append(1) or windows(*a, **k))
    kwargs = dict(domains=("btcv_like",), cases=1, data_dir=tmp_path)
    alone = {lc: zero_shot_phantoms(model, largest_component=lc, **kwargs) for lc in (False, True)}
    assert len(passes) == 2
    both = zero_shot_phantoms(model, largest_component=(False, True), **kwargs)
    assert len(passes) == 3                         # one sliding-window pass for both settings
    assert (alone[False].dice != alone[True].dice).any()
    for lc in (False, True):
        rows = both[both.largest_component == lc].reset_index(drop=True)
        np.testing.assert_allclose(rows.dice, alone[lc].dice, atol=1e-3)

    # the masks handed out are the ones scored: their Dice against the truth is the table's
    from fseft_lab.anatomy import BASE_ORGANS
    from fseft_lab.data.layouts import open_dataset
    from fseft_lab.data.transforms import preprocess
    from fseft_lab.evaluate import score

    masks = {}
    raw = zero_shot_phantoms(model, masks_out=masks, **kwargs)
    assert len(passes) == 4
    ds = open_dataset(next(tmp_path.glob("btcv_like_*")))
    case = preprocess(12.0, 64)(ds.load(ds.cases[0], BASE_ORGANS))
    truth = torch.stack([case["label"][0] == i + 1 for i in range(len(BASE_ORGANS))])[None].float()
    dice = score(masks[("btcv_like", case["case"])][None].float(), truth, [12.0] * 3)["dice"]
    np.testing.assert_allclose(dice, raw.dice, atol=1e-6)


def test_nnunet_augmentation_crops_about_the_same_centres_and_changes_no_other_draw(monkeypatch):
    from fseft_lab.data import augment

    data = _tiny_sources()
    plain = [draw_batch(data, step, 0, 0, 32, 2, contrast=0.5, phase=0.5) for step in range(4)]
    with monkeypatch.context() as m:  # the wider crop's centre, no transform drawn: the very same crops
        m.setattr(augment, "SCALING", (0.0, (1.0, 1.0)))
        m.setattr(augment, "ROTATION", (0.0, 0.0))
        m.setattr(augment, "ACQUISITION", {})
        still = [draw_batch(data, step, 0, 0, 32, 2, contrast=0.5, phase=0.5, nnunet=1.0) for step in range(4)]
    for a, b in zip(plain, still):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    augmented = [draw_batch(data, step, 0, 0, 32, 2, contrast=0.5, phase=0.5, nnunet=1.0) for step in range(4)]
    assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(plain, augmented))
    assert all(b["image"].shape == (2, 1, 32, 32, 32) and torch.equal(a["annotated"], b["annotated"])
               for a, b in zip(plain, augmented))
    with pytest.raises(ValueError, match="nnunet_aug=2"):
        pretrain(PretrainConfig(out=Path("unused"), steps=1, nnunet_aug=2), data=data, progress=False)
