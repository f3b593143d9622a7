"""Our methods against Hugging Face peft, a widely used independent implementation.

peft is in the ``[dev]`` extra, so CI runs these (they skip only where peft is not installed).
LoRA: our layer, then the whole model with LoRA on every Swin attention ``qkv``, against peft's
LoRA on the same modules with the same A and B. Affine-LN: the same LayerNorms selected, the
same count, and one identical training step gives the same model as peft's LN tuning.
"""
import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

from fseft_lab.methods import build, swin_modules, trainable_parameters
from fseft_lab.methods.lora import LoRALinear
from fseft_lab.models.foundation import FoundationModel

peft = pytest.importorskip("peft")


def test_our_lora_matches_peft_on_the_same_module_with_the_same_a_and_b():
    torch.manual_seed(0)
    d, rank, alpha = 24, 4, 4.0
    base = nn.Linear(d, 3 * d)
    ours = LoRALinear(copy.deepcopy(base), rank, alpha)
    nn.init.normal_(ours.lora_B.weight)            # a non-zero update, so that a mismatch would show
    # peft's rank is our 3r (A: d -> 3r) and its scaling lora_alpha / r_peft must equal alpha / r
    config = peft.LoraConfig(r=3 * rank, lora_alpha=alpha * 3, target_modules=["qkv"], lora_dropout=0.0)
    theirs = peft.inject_adapter_in_model(config, nn.Sequential(OrderedDict(qkv=copy.deepcopy(base))))
    layer = theirs.qkv
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(ours.lora_A.weight)
        layer.lora_B["default"].weight.copy_(ours.lora_B.weight)
    x = torch.randn(5, 7, d)
    assert layer.scaling["default"] == pytest.approx(ours.scaling)
    assert torch.allclose(theirs(x), ours(x), atol=1e-6)
    assert not torch.allclose(ours(x), base(x), atol=1e-3)   # the update is really there


@pytest.fixture(scope="module")
def foundation():
    torch.manual_seed(0)
    return FoundationModel(12).eval()


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.rand(1, 1, 64, 64, 64)


@pytest.mark.slow
def test_lora_on_every_swin_qkv_matches_peft_over_the_whole_model(foundation, x):
    rank, alpha = 4, 4.0
    ours = build(foundation, "lora", ["liver"], rank=rank, alpha=alpha).eval()
    targets = [n for n, _ in swin_modules(foundation, nn.Linear) if n.endswith(".qkv")]
    config = peft.LoraConfig(r=3 * rank, lora_alpha=3 * alpha, target_modules=targets, lora_dropout=0.0)
    ours_base = build(foundation, "linear_probe", ["liver"])     # the same task head, no LoRA
    theirs = peft.inject_adapter_in_model(config, copy.deepcopy(ours_base))
    ours_lora = {n: m for n, m in ours.named_modules() if isinstance(m, LoRALinear)}
    assert sorted(ours_lora) == sorted(targets)            # the same modules: every Swin qkv, nothing else
    torch.manual_seed(2)
    with torch.no_grad():
        for name, layer in ours_lora.items():
            nn.init.normal_(layer.lora_B.weight, std=0.05)   # a non-zero update in every block
            other = theirs.get_submodule(name)
            other.lora_A["default"].weight.copy_(layer.lora_A.weight)
            other.lora_B["default"].weight.copy_(layer.lora_B.weight)
        theirs.eval()
        expected, got, base = theirs(x), ours(x), ours_base.eval()(x)
    lora_params = sum(p.numel() for n, p in theirs.named_parameters() if "lora_" in n)
    assert lora_params == trainable_parameters(ours) - sum(p.numel() for p in ours.classifier.parameters())
    assert (got - base).abs().max() > 1e-3                 # the updates change the output
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Unsupported layer type")   # peft's generic warning for LayerNorm targets
@pytest.mark.slow
def test_affine_ln_matches_peft_ln_tuning_after_one_training_step(foundation, x):
    ours = build(foundation, "affine_ln", ["liver"]).train()
    ours.classifier.requires_grad_(False)                  # peft tunes the norms only: compare those
    targets = [n for n, _ in swin_modules(foundation, nn.LayerNorm)]
    theirs = peft.inject_adapter_in_model(peft.LNTuningConfig(target_modules=targets),
                                          build(foundation, "zero_shot", ["liver"])).train()
    tuned = lambda model: {n.replace(".ln_tuning_layers.default", ""): p  # noqa: E731
                           for n, p in model.named_parameters() if p.requires_grad}
    assert sorted(tuned(ours)) == sorted(tuned(theirs))    # the same LayerNorms, so the same count
    assert sum(p.numel() for p in tuned(ours).values()) == 2 * sum(m.normalized_shape[0] for n, m in
                                                                   swin_modules(foundation, nn.LayerNorm))
    target = (torch.rand(1, 1, 64, 64, 64) > 0.7).float()
    for model in (ours, theirs):
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=10.0)
        nn.functional.binary_cross_entropy_with_logits(model(x), target).backward()
        optimizer.step()
    ours.eval(), theirs.eval()
    with torch.no_grad():
        got, expected = ours(x), theirs(x)
    moved = {n for n, p in tuned(ours).items() if not torch.equal(p, foundation.get_parameter(n))}
    assert moved                                           # the step trained the norms
    assert torch.allclose(got, expected, atol=1e-5)
