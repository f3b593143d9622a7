"""Optional (extra ``[peft]``): our LoRA layer matches Hugging Face peft's LoRA numerically."""
import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

from fseft_lab.methods.lora import LoRALinear

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
