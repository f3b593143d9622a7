"""Model zoo: every public naming scheme loads into FoundationModel; bad files fail clearly."""
import argparse
import dataclasses

import pytest
import torch

from fseft_lab.anatomy import DATASET_TEMPLATES, UNIVERSAL_TEMPLATE
from fseft_lab.models import zoo
from fseft_lab.models.foundation import FoundationModel


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    return FoundationModel(12).eval()


def tiny(name):
    return dataclasses.replace(zoo.ZOO[name], feature_size=12, legacy_merging=False)


def fresh():
    torch.manual_seed(1)
    return FoundationModel(12).eval()


def outputs(model, features=False):
    torch.manual_seed(2)
    x = torch.rand(1, 1, 64, 64, 64)
    with torch.no_grad():
        return model.features(x) if features else model(x)


@pytest.mark.slow
def test_fseft_scheme_module_prefix_loads_everything(source):
    state = {"module." + k: v for k, v in source.state_dict().items()}
    model = fresh()
    report = zoo.load_checkpoint(model, state, tiny("fseft"))
    assert report.missing == [] and report.unexpected == []
    assert report.head_rows == list(UNIVERSAL_TEMPLATE)
    assert torch.allclose(outputs(model), outputs(source), atol=1e-6)


@pytest.mark.slow
def test_btcv_softmax_head_rows_go_to_their_structures(source):
    state = {k.replace("classifier", "out.conv.conv"): v for k, v in source.state_dict().items() if not k.startswith("classifier")}
    rows = [UNIVERSAL_TEMPLATE.index(s) for s in DATASET_TEMPLATES["btcv"].values()]
    weight = source.classifier.weight.detach()
    state["out.conv.conv.weight"] = torch.cat([torch.randn(1, *weight.shape[1:]), weight[rows]])  # background first
    state["out.conv.conv.bias"] = torch.cat([torch.randn(1), source.classifier.bias.detach()[rows]])
    model = fresh()
    report = zoo.load_checkpoint(model, {"state_dict": state}, tiny("btcv"))
    assert report.head_rows == list(DATASET_TEMPLATES["btcv"].values())
    assert torch.allclose(outputs(model)[:, rows], outputs(source)[:, rows], atol=1e-6)
    duodenum = UNIVERSAL_TEMPLATE.index("duodenum")  # not a BTCV class: its row stays as initialised
    assert torch.equal(model.classifier.weight[duodenum], fresh().classifier.weight[duodenum])


def test_tang_encoder_only_with_fc_names(source):
    state = {"module." + k[len("swinViT."):].replace(".mlp.linear", ".mlp.fc"): v
             for k, v in source.state_dict().items() if k.startswith("swinViT.")}
    state["module.rotation_head.weight"] = torch.zeros(4, 8)
    model = fresh()
    report = zoo.load_checkpoint(model, {"state_dict": state}, tiny("tang2022_ssl"))
    for k, v in source.state_dict().items():
        if k.startswith("swinViT."):
            assert torch.equal(model.state_dict()[k], v), k
    assert any(k.startswith("decoder1.") for k in report.missing) and "classifier.weight" in report.missing
    assert report.unexpected == ["rotation_head.weight"]


@pytest.mark.parametrize("name,prefix", [("clip_driven", "module."), ("clip_driven", "module.backbone."),
                                         ("suprem_swinunetr", "module.backbone.")])
@pytest.mark.slow
def test_dynamic_head_checkpoints_load_the_backbone_only(source, name, prefix):
    state = {prefix + k: v for k, v in source.state_dict().items() if not k.startswith("classifier")}
    state.update({"module.controller.weight": torch.zeros(153, 512, 1, 1, 1), "module.organ_embedding": torch.zeros(32, 512)})
    model = fresh()
    report = zoo.load_checkpoint(model, {"net": state}, tiny(name))
    assert report.missing == ["classifier.bias", "classifier.weight"]
    assert sorted(report.unexpected) == ["controller.weight", "organ_embedding"]
    assert torch.allclose(outputs(model, features=True), outputs(source, features=True), atol=1e-6)


def test_shape_mismatch_names_the_key(source):
    torch.manual_seed(0)
    wide = FoundationModel(24).state_dict()
    with pytest.raises(ValueError, match="shape mismatch for .*checkpoint .*24"):
        zoo.load_checkpoint(fresh(), wide, tiny("fseft"))


def test_unknown_keys_are_refused_when_strict(source):
    state = dict(source.state_dict())
    state["decoder9.conv.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="decoder9"):
        zoo.load_checkpoint(fresh(), state, tiny("fseft"))
    report = zoo.load_checkpoint(fresh(), state, tiny("fseft"), strict=False)
    assert "decoder9.conv.weight" in report.unexpected


def test_truncated_and_missing_files(tmp_path, source):
    path = tmp_path / "model.pt"
    torch.save(source.state_dict(), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cannot read checkpoint .*model.pt"):
        zoo.load_checkpoint(fresh(), path, tiny("fseft"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        zoo.load_checkpoint(fresh(), tmp_path / "absent.pt", tiny("fseft"))


def not_checkpoints(folder) -> dict:
    """Files that are not PyTorch checkpoints: a results table, a download cut in half, random bytes."""
    table = folder / "results.csv"
    table.write_text("case,structure,dice\nc1,liver,0.91\n")
    truncated = folder / "truncated.pt"
    torch.save({"weight": torch.arange(256.0), "bias": torch.zeros(8)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    noise = folder / "noise.bin"
    noise.write_bytes(torch.randint(0, 256, (300,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes())
    garbled = folder / "garbled.pt"
    garbled.write_bytes(b"\x80\x02R.")  # a pickle whose unpickling fails with IndexError, not UnpicklingError
    return {"csv": table, "truncated": truncated, "random": noise, "garbled": garbled}


@pytest.mark.parametrize("kind", ["csv", "truncated", "random", "garbled"])
def test_a_file_that_is_not_a_checkpoint_fails_in_one_line_without_torchs_unsafe_hint(tmp_path, kind):
    """Issue 35: torch's own error advised re-running torch.load with weights_only=False, which runs
    whatever code a pickle holds; the error says what the file is instead, and nothing of torch's."""
    path = not_checkpoints(tmp_path)[kind]
    for load in (zoo.read_state_dict, zoo.load_foundation):
        with pytest.raises(ValueError) as caught:
            load(path)
        err = caught.value
        text = str(err)
        assert "weights_only" not in text and "\n" not in text, text
        assert str(path) in text and f"{path.stat().st_size:,} bytes" in text and repr(path.read_bytes()[:16]) in text
        assert "not a PyTorch checkpoint (a zip archive)" in text
        assert err.__cause__ is None and err.__suppress_context__  # torch's text is not shown below it either


def test_a_checkpoint_holding_other_objects_is_not_unpickled_and_says_so(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"args": argparse.Namespace(lr=1e-3), "weight": torch.zeros(3)}, path)  # as some training scripts save
    with pytest.raises(ValueError, match=r"pickled.pt \(.* bytes\): a zip archive, but holds objects other than") as caught:
        zoo.read_state_dict(path)
    assert "weights_only" not in str(caught.value) and caught.value.__cause__ is None


def test_download_is_atomic_and_checks_the_checksum(tmp_path, monkeypatch, source):
    monkeypatch.setenv("FSEFT_CACHE", str(tmp_path / "cache"))
    remote = tmp_path / "remote.pt"
    torch.save(source.state_dict(), remote)
    good = dataclasses.replace(tiny("btcv"), name="good", url=remote.as_uri(), filename="good.pt", sha256=zoo.sha256(remote))
    bad = dataclasses.replace(good, name="bad", filename="bad.pt", sha256="0" * 64)
    offline = dataclasses.replace(good, name="offline", url="http://127.0.0.1:9/none.pt", filename="offline.pt")
    monkeypatch.setitem(zoo.ZOO, "good", good)
    monkeypatch.setitem(zoo.ZOO, "bad", bad)
    monkeypatch.setitem(zoo.ZOO, "offline", offline)
    path = zoo.download("good", progress=False)
    assert path.read_bytes() == remote.read_bytes()
    with pytest.raises(ValueError, match="checksum mismatch for bad"):
        zoo.download("bad", progress=False)
    with pytest.raises(ConnectionError, match="by hand .*offline.pt"):
        zoo.download("offline", progress=False, timeout=2)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["good.pt"]  # nothing half-written


def test_unknown_checkpoint_lists_the_zoo():
    with pytest.raises(ValueError, match="phantom_cpu"):
        zoo.get_checkpoint("imagenet")


def test_legacy_patch_merging_has_the_same_weights_but_another_function():
    from monai.networks.nets.swin_unetr import PatchMerging
    torch.manual_seed(0)
    new, old = PatchMerging(6), zoo.LegacyPatchMerging(6)
    old.load_state_dict(new.state_dict())
    x = torch.rand(1, 4, 4, 4, 6)
    assert new(x).shape == old(x).shape == (1, 2, 2, 2, 12)
    assert not torch.allclose(new(x), old(x))
    # MONAI <= 1.4 concatenated these sub-grids (x5, x6 repeat x2, x3; MONAI issue #8284)
    order = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1)]
    stacked = torch.cat([x[:, i::2, j::2, k::2, :] for i, j, k in order], -1)
    assert torch.allclose(old(x), old.reduction(old.norm(stacked)))


def test_weights_checksum_follows_the_weights_not_the_file(tmp_path):
    state = {"a.weight": torch.arange(6, dtype=torch.float16).reshape(2, 3), "steps": torch.tensor(3)}
    torch.save(state, tmp_path / "one.pt")
    torch.save(state, tmp_path / "two.pt")       # torch writes the file's name into its archive
    assert zoo.sha256(tmp_path / "one.pt") != zoo.sha256(tmp_path / "two.pt")
    assert zoo.weights_sha256(tmp_path / "one.pt") == zoo.weights_sha256(tmp_path / "two.pt")
    state["a.weight"][0, 0] = 1.0
    torch.save(state, tmp_path / "changed.pt")
    assert zoo.weights_sha256(tmp_path / "changed.pt") != zoo.weights_sha256(tmp_path / "one.pt")


def _schemes(source):
    """A synthetic file of each real key scheme, built from ``source``'s weights."""
    own = source.state_dict()
    swin = {k: v for k, v in own.items() if k.startswith("swinViT.")}
    backbone = {k: v for k, v in own.items() if not k.startswith("classifier")}
    btcv_head = {"out.conv.conv.weight": torch.randn(14, 12, 1, 1, 1), "out.conv.conv.bias": torch.randn(14)}
    return {
        "phantom_cpu": dict(own),                                                       # fseft-lab pretrain
        "fseft": {"state_dict": {"module." + k.replace("swinViT", "swin_vit").replace("classifier", "out.conv.conv"): v
                                 for k, v in own.items()}},                             # the reference's DDP dict
        "btcv": {"state_dict": {**backbone, **btcv_head}},                              # MONAI BTCV tutorial
        "tang2022_ssl": {"state_dict": {"module." + k[len("swinViT."):].replace(".mlp.linear", ".mlp.fc"): v
                                        for k, v in swin.items()}},                     # MONAI self-supervised
        "clip_driven": {"net": {"module.backbone." + k: v for k, v in backbone.items()}
                        | {"module.controller.weight": torch.zeros(8, 4, 1, 1, 1)}},    # CLIP-Driven and SuPreM
    }


@pytest.mark.parametrize("scheme", ["phantom_cpu", "fseft", "btcv", "tang2022_ssl", "clip_driven"])
def test_a_file_given_by_path_loads_by_its_detected_or_named_scheme(source, tmp_path, scheme):
    path = tmp_path / f"{scheme}.pth"
    torch.save(_schemes(source)[scheme], path)
    for named in (None, scheme):
        model = zoo.load_foundation(path, named)
        assert model.scheme == (path.name if scheme == "phantom_cpu" else scheme) and model.feature_size == 12
        for k, v in source.state_dict().items():
            if k.startswith("swinViT."):
                assert torch.equal(model.state_dict()[k], v), k
    if scheme != "tang2022_ssl":    # the backbone-only scheme of SuPreM loads the same file
        assert zoo.load_foundation(path, "suprem_swinunetr" if scheme == "clip_driven" else scheme).load_report.missing \
            == (["classifier.bias", "classifier.weight"] if scheme == "clip_driven" else [])


def _unet_file(path, wrap):
    from monai.networks.nets import UNet

    unet = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
    torch.save(wrap({f"module.backbone.{k}": v for k, v in unet.state_dict().items()}), path)
    return path


@pytest.mark.parametrize("name, wrap", [("suprem_swinunetr", lambda s: {"net": s}), ("clip_driven", lambda s: {"net": s}),
                                        ("tang2022_ssl", lambda s: {"state_dict": s}), ("fseft", lambda s: {"state_dict": s})])
def test_another_architecture_raises_instead_of_loading_nothing(tmp_path, name, wrap):
    path = _unet_file(tmp_path / "unet.pth", wrap)
    with pytest.raises(ValueError, match=rf"unet.pth: .*it is not a {name} checkpoint") as raised:
        zoo.load_foundation(path, name)
    assert name == "fseft" or "it gives 0 of the model's" in str(raised.value)   # fseft keeps every key: refused as unknown
    with pytest.raises(ValueError, match=r"unet.pth: the checkpoint's keys \(e.g. \['module.backbone.model.0.conv.weight'.*"
                                         r"follow no zoo entry's key scheme.*--scheme ENTRY"):
        zoo.load_foundation(path)
