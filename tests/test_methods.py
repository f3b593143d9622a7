"""The generic method suite: every registered method is checked here, with no test edits needed."""
import copy
import io

import pytest
import torch

from fseft_lab.anatomy import UNIVERSAL_TEMPLATE
from fseft_lab.methods import REGISTRY, _load_all, adapter_state_dict, build, get_method, load_adapter, swin_modules, trainable_parameters
from fseft_lab.models.foundation import FoundationModel

_load_all()
METHODS = sorted(REGISTRY)
#: paper_facts.md: trainable parameters, SwinUNETR-48, binary task, head included
PAPER_COUNTS = {"linear_probe": 49, "adapter_1x1": 4_657, "spatial_adapter": 124_465, "affine_ln": 17_329,
                "lora": 69_169, "adaptformer": 47_697, "zero_shot": 0,
                "bitfit": 210_739,   # the reference code's filter: 9 biases of width d per block, the relative-
                                     # position tables (13^3 x heads per block) and the head
                "compacter": 217_073}  # the table's "~217,000": PHM layers plus the encoder's LayerNorms
#: the registered variants (``Method.variants``) at the paper configuration
VARIANT_COUNTS = {("bitfit", "relative_position_tables", False): 13_009,   # the table's "~13,000"
                  ("adaptformer", "branch_input", "normalised"): 47_697,
                  ("compacter", "init", "zero"): 217_073}
#: methods whose output at step 0 differs from the foundation model's by design
NOT_IDENTITY_AT_START = ("scratch",      # re-initialises
                         "compacter")    # the reference's random PHM replaces each branch (init="zero" does not)


@pytest.fixture(scope="module")
def foundation():
    torch.manual_seed(0)
    model = FoundationModel(12)
    with torch.no_grad():  # non-zero head biases / weights everywhere so that "unchanged" means something
        model.classifier.bias.normal_()
    return model.eval()


@pytest.fixture(scope="module")
def x():
    """The smallest input the model trains on: sides are multiples of 32 (five halvings), and the
    bottleneck's instance norm needs more than one voxel (64 x 32 x 32 gives it 2). A third of the
    cost of a 64^3 crop; the rules checked here do not depend on the size."""
    torch.manual_seed(1)
    return torch.rand(1, 1, 64, 32, 32)


def _scrambled(model):
    """Give zero-initialised adapter weights values, so that a wrong load would show."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def base_output(foundation, x):
    with torch.no_grad():  # the foundation model's own liver and left-kidney channels
        return foundation(x)[:, [UNIVERSAL_TEMPLATE.index("liver"), UNIVERSAL_TEMPLATE.index("kidney_left")]]


@pytest.mark.parametrize("method", [m for m in METHODS if m not in NOT_IDENTITY_AT_START])
def test_output_at_initialisation_equals_the_foundation_model(foundation, x, base_output, method):
    adapted = build(foundation, method, ["liver", "kidney_left"]).eval()
    with torch.no_grad():
        assert torch.allclose(adapted(x), base_output, atol=1e-5), method


def test_compacter_starts_as_the_foundation_model_only_with_zero_init(foundation, x, base_output):
    with torch.no_grad():
        zero = build(foundation, "compacter", ["liver", "kidney_left"], init="zero").eval()(x)
        reference = build(foundation, "compacter", ["liver", "kidney_left"]).eval()(x)
    assert torch.allclose(zero, base_output, atol=1e-5)
    assert (reference - base_output).abs().max() > 0.1     # the reference's PHM replaces each branch


@pytest.mark.parametrize("method", [m for m in METHODS if m != "zero_shot"])
def test_three_steps_change_only_the_methods_parameters(foundation, x, method):
    model = build(foundation, method, ["liver"]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    target = (torch.rand(x.shape) > 0.5).float()
    for _ in range(3):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed, f"{method}: nothing trained"
    assert changed <= trainable, f"{method} changed frozen tensors: {sorted(changed - trainable)[:5]}"
    assert "classifier" in " ".join(changed) or method == "scratch"


@pytest.fixture(scope="module")
def paper_foundation():
    return FoundationModel(48)


@pytest.mark.parametrize("method", sorted(PAPER_COUNTS))
def test_paper_configuration_trainable_counts(paper_foundation, method):
    model = build(paper_foundation, method, ["liver"])
    assert trainable_parameters(model) == PAPER_COUNTS[method]


@pytest.mark.parametrize("method, option, value", sorted(VARIANT_COUNTS))
def test_variant_trainable_counts(paper_foundation, method, option, value):
    assert {option: value} in get_method(method).variants.values()   # `fseft-lab methods` lists it
    model = build(paper_foundation, method, ["liver"], **{option: value})
    assert trainable_parameters(model) == VARIANT_COUNTS[method, option, value]


def test_bitfit_trains_each_swin_relative_position_table_only_with_the_reference_filter(paper_foundation):
    def tables(model):
        return {n for n, p in model.named_parameters() if p.requires_grad and "relative_position_bias_table" in n}
    every = {n for n, _ in paper_foundation.named_parameters() if n.endswith("relative_position_bias_table")}
    assert len(every) == 8 and tables(build(paper_foundation, "bitfit", ["liver"])) == every
    assert tables(build(paper_foundation, "bitfit", ["liver"], relative_position_tables=False)) == set()


def _lora_placement_errors(model) -> list[str]:
    """Where LoRA must be: on the qkv of every Swin window attention, and nowhere else."""
    from monai.networks.nets.swin_unetr import WindowAttention

    from fseft_lab.methods.lora import LoRALinear

    expected = {f"{n}.qkv" for n, _ in swin_modules(model, WindowAttention)}
    placed = {n for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    return [f"LoRA on {n}" for n in sorted(placed - expected)] + [f"no LoRA on {n}" for n in sorted(expected - placed)]


def test_lora_sits_on_every_swin_qkv_and_nowhere_else(foundation):
    model = build(foundation, "lora", ["liver"])
    assert len({n for n, _ in model.named_modules() if n.endswith("attn.qkv")}) == 8
    assert _lora_placement_errors(model) == []


def test_the_lora_placement_check_catches_lora_on_the_wrong_layer_with_the_same_count(paper_foundation):
    """Counterexample: LoRA on each attention's output projection (d -> d) at rank 2r costs what
    LoRA on qkv (d -> 3d) costs at rank r, so counts and the generic suite cannot tell them apart."""
    from fseft_lab.methods.lora import LoRALinear

    model = build(paper_foundation, "linear_probe", ["liver"])
    for _, attention in [(n, m) for n, m in swin_modules(model, torch.nn.Module) if hasattr(m, "qkv")]:
        attention.proj = LoRALinear(attention.proj, rank=8, alpha=8.0)
        attention.proj.lora_A.requires_grad_(True)
        attention.proj.lora_B.requires_grad_(True)
    assert trainable_parameters(model) == PAPER_COUNTS["lora"]
    assert len(_lora_placement_errors(model)) == 16       # 8 on the wrong layer, 8 qkv without LoRA


def _adaptformer_reads(model, x) -> set[str]:
    """What each AdaptFormer branch reads, per block: 'block input' when its ``down`` gets exactly
    the tensor that enters the block's second LayerNorm (as the reference), else 'other'."""
    from fseft_lab.methods.adaptformer import AdaptFormerBlock

    seen, reads = {}, set()
    wrapped = [m for m in model.modules() if isinstance(m, AdaptFormerBlock)]
    assert len(wrapped) == 8, f"{len(wrapped)} AdaptFormer blocks, the Swin encoder has 8"
    hooks = [m.base_layer.norm2.register_forward_pre_hook(lambda mod, args, m=m: seen.__setitem__((m, "norm2"), args[0]))
             for m in wrapped]
    hooks += [m.down.register_forward_pre_hook(lambda mod, args, m=m: seen.__setitem__((m, "down"), args[0]))
              for m in wrapped]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for m in wrapped:
        reads.add("block input" if torch.equal(seen[m, "down"], seen[m, "norm2"]) else "other")
    return reads


def test_adaptformer_branch_reads_the_block_input_before_norm2(foundation, x):
    assert _adaptformer_reads(build(foundation, "adaptformer", ["liver"]).eval(), x) == {"block input"}


def test_the_adaptformer_placement_check_catches_the_normalised_input_with_the_same_count(foundation, x):
    model = build(foundation, "adaptformer", ["liver"], branch_input="normalised").eval()
    assert trainable_parameters(model) == trainable_parameters(build(foundation, "adaptformer", ["liver"]))
    assert _adaptformer_reads(model, x) == {"other"}


def _with_checkpointing(model):
    """The same model with activation checkpointing switched on in every Swin block (as
    ``FoundationModel(use_checkpoint=True)`` builds it)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if hasattr(module, "use_checkpoint"):
            module.use_checkpoint = True
    return model


def _checkpoint_calls(model, x, monkeypatch) -> int:
    """How many times one forward and backward pass calls ``torch.utils.checkpoint.checkpoint``."""
    real, calls = torch.utils.checkpoint.checkpoint, []
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    model(x).sum().backward()
    monkeypatch.undo()
    return len(calls)


@pytest.mark.slow
def test_adaptformer_honours_activation_checkpointing_with_the_same_output(foundation, x, monkeypatch):
    """Issue 35: AdaptFormer called its blocks' halves itself and so never checkpointed (0 calls against LoRA's 16)."""
    plain = _with_checkpointing(foundation).train()
    lora = _with_checkpointing(build(foundation, "lora", ["liver"])).train()
    adaptformer = _scrambled(build(foundation, "adaptformer", ["liver"])).train()
    checkpointed = _with_checkpointing(adaptformer)
    counts = {name: _checkpoint_calls(m, x, monkeypatch) for name, m in
              [("plain", plain), ("lora", lora), ("adaptformer", checkpointed)]}
    assert counts["adaptformer"] > 0 and counts["adaptformer"] == counts["lora"] == counts["plain"], counts
    adaptformer(x).sum().backward()
    assert torch.allclose(checkpointed(x), adaptformer(x), atol=1e-6)
    for (name, p), q in zip(adaptformer.named_parameters(), checkpointed.parameters()):
        if p.requires_grad:
            assert torch.allclose(p.grad, q.grad, atol=1e-5), name


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("zero_shot",)])
@pytest.mark.slow
def test_adapter_state_dict_round_trip(foundation, x, method):
    adapted = _scrambled(build(foundation, method, ["liver"])).eval()
    buffer = io.BytesIO()
    torch.save(adapter_state_dict(adapted), buffer)
    # the file holds the trained tensors only (float32) plus a little pickle overhead per tensor
    budget = 4 * trainable_parameters(adapted) + 1_000 * len(adapter_state_dict(adapted)) + 10_000
    assert buffer.tell() < budget, f"{method} adapter file is {buffer.tell()} bytes, more than its trained tensors"
    buffer.seek(0)
    fresh = FoundationModel(12)
    fresh.load_state_dict(foundation.state_dict())
    restored = load_adapter(fresh, torch.load(buffer, weights_only=True), method, ["liver"]).eval()
    with torch.no_grad():
        assert torch.allclose(restored(x), adapted(x), atol=1e-5)


@pytest.mark.slow
def test_an_adapter_file_keeps_its_options_when_a_default_changes(foundation, x, tmp_path, monkeypatch):
    from fseft_lab.methods import load_adapter_file, save_adapter
    from fseft_lab.methods.adaptformer import AdaptFormerConfig

    adapted = _scrambled(build(foundation, "adaptformer", ["liver"])).eval()   # trained with the default branch
    save_adapter(adapted, tmp_path / "liver.pt")
    monkeypatch.setattr(AdaptFormerConfig, "branch_input", "normalised")      # a later release changes it
    restored = load_adapter_file(foundation, tmp_path / "liver.pt").eval()
    assert _adaptformer_reads(restored, x) == {"block input"}
    with torch.no_grad():
        assert torch.allclose(restored(x), adapted(x), atol=1e-5)


def test_an_adapter_file_that_predates_recorded_options_loads_with_a_warning_naming_its_defaults(
        foundation, tmp_path):
    from fseft_lab.methods import load_adapter_file, save_adapter

    save_adapter(build(foundation, "adaptformer", ["liver"]), tmp_path / "new.pt")
    old = torch.load(tmp_path / "new.pt", weights_only=True)
    del old["format"]
    old["options"] = {"scale": 0.1}                        # older files held only the options set by hand
    torch.save(old, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match=r"old\.pt predates .*'scale': 0\.1, 'branch_input': 'block'"):
        load_adapter_file(foundation, tmp_path / "old.pt")
    old["options"] = {}
    torch.save({**old, "method": "affine_ln", "state": {}}, tmp_path / "no_options.pt")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # a method without options has nothing to guess
        with pytest.raises(ValueError, match="lacks"):     # (its tensors are missing: that error, no warning)
            load_adapter_file(foundation, tmp_path / "no_options.pt")


@pytest.mark.parametrize("kind", ["csv", "truncated", "random"])
def test_an_adapter_that_is_not_a_checkpoint_fails_in_one_line_without_torchs_unsafe_hint(foundation, tmp_path, kind):
    """Issue 35: the loader shares the zoo's, which never passes on torch's advice to unpickle the file."""
    from fseft_lab.methods import load_adapter_file

    path = tmp_path / "adapter.pt"
    if kind == "csv":
        path.write_text("case,structure,dice\nc1,liver,0.91\n")
    elif kind == "truncated":  # a download cut short
        torch.save({"method": "lora", "state": {"lora_A": torch.arange(256.0)}}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(bytes(torch.randint(0, 256, (300,), generator=torch.Generator().manual_seed(0)).tolist()))
    with pytest.raises(ValueError) as caught:
        load_adapter_file(foundation, path)
    text = str(caught.value)
    assert text.startswith(f"cannot read adapter file {path} (") and "weights_only" not in text and "\n" not in text
    assert f"{path.stat().st_size:,} bytes" in text and repr(path.read_bytes()[:16]) in text
    assert "not a PyTorch checkpoint (a zip archive)" in text and caught.value.__cause__ is None


def test_task_head_rows_come_from_the_template_and_novel_rows_are_new(foundation):
    model = build(foundation, "linear_probe", ["liver", "heart_myocardium"], multiclass=True)
    assert model.task_structures == ("background", "liver", "heart_myocardium")
    liver = foundation.classifier.weight[5]
    assert torch.equal(model.classifier.weight[1], liver)
    assert not torch.equal(model.classifier.weight[2], liver)
    assert torch.sigmoid(model.classifier.bias[2]).item() == pytest.approx(0.02)  # a new row starts at p = 0.02


def test_decoder_options(foundation):
    frozen = build(foundation, "lora", ["liver"])
    tuned = build(foundation, "lora", ["liver"], decoder="fine-tuned")
    new = build(foundation, "lora", ["liver"], decoder="new")
    assert not any(p.requires_grad for p in frozen.decoder1.parameters())
    assert all(p.requires_grad for p in tuned.decoder1.parameters())
    assert torch.equal(tuned.decoder1.state_dict()["conv_block.conv1.conv.weight"],
                       foundation.decoder1.state_dict()["conv_block.conv1.conv.weight"])
    assert not torch.equal(new.decoder1.state_dict()["conv_block.conv1.conv.weight"],
                           foundation.decoder1.state_dict()["conv_block.conv1.conv.weight"])
    with pytest.raises(ValueError, match="decoder='thawed'"):
        build(foundation, "lora", ["liver"], decoder="thawed")


def test_bad_method_names_and_options(foundation):
    with pytest.raises(ValueError, match="unknown method 'prompt_tuning'.*lora"):
        get_method("prompt_tuning")
    with pytest.raises(ValueError, match="no option \\['rnak'\\]"):
        build(foundation, "lora", ["liver"], rnak=8)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        build(foundation, "lora", ["liver"], rank=0)
    with pytest.raises(ValueError, match="structure name 'liver,spleen' must be a word"):   # tasks check names
        build(foundation, "linear_probe", ["liver,spleen"])


def test_scratch_does_not_depend_on_the_foundation_weights():
    torch.manual_seed(0)
    a = build(FoundationModel(12), "scratch", ["liver"])
    torch.manual_seed(1)
    b = build(FoundationModel(12), "scratch", ["liver"])
    for (name, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), name


def test_adaptive_lora_counts_lora_plus_one_scale_per_component(paper_foundation):
    """P diag(s) Q at rank r: LoRA's A and B at rank r plus 3r scales s in each of the 8 Swin blocks."""
    lora = trainable_parameters(build(paper_foundation, "lora", ["liver"], rank=8))
    adaptive = trainable_parameters(build(paper_foundation, "adaptive_lora", ["liver"], rank=8))
    assert lora == 138_289 and adaptive == lora + 8 * 3 * 8


def test_zero_shot_softmax_equals_the_thresholded_sigmoid_argmax(foundation, x):
    """A zero background row makes the multi-class task head agree with the universal sigmoid head."""
    structures = ["liver", "kidney_left", "spleen"]
    with torch.no_grad():
        logits = build(foundation, "zero_shot", structures, multiclass=True).eval()(x)
        sigmoid = foundation(x)[:, [UNIVERSAL_TEMPLATE.index(s) for s in structures]]
    expected = torch.where(sigmoid.max(1).values > 0, sigmoid.argmax(1) + 1, 0)
    assert torch.equal(logits.argmax(1), expected)
