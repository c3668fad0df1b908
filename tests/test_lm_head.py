"""stepgrpo_fast/lm_head.py: the one head lookup / unwrap / logit scale / scoring path."""
from __future__ import annotations

import types

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from stepgrpo_fast import lm_head
from stepgrpo_fast.integrations import verl as sg_verl


def _tiny_lm(seed: int = 0, tie: bool = False) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=53, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie)
    return Qwen2ForCausalLM(config).eval()


class _Wrapper(torch.nn.Module):  # the shape of DDP / DeepSpeedEngine: the model under .module
    def __init__(self, module):
        super().__init__()
        self.module = module


class _Compiled(torch.nn.Module):  # the shape of torch.compile's OptimizedModule
    def __init__(self, module):
        super().__init__()
        self._orig_mod = module


def test_unwrap_through_nested_wrappers_and_the_head_is_the_models():
    model = _tiny_lm()
    wrapped = _Compiled(_Wrapper(_Compiled(model)))
    assert lm_head.unwrap_model(wrapped) is model
    assert lm_head.output_head(wrapped) is model.lm_head
    from stepgrpo_fast.trainer.model.loading import lm_head as trainer_head

    assert trainer_head(wrapped) is model.lm_head  # the trainer uses the same lookup


def test_peft_modules_to_save_head_resolves_to_the_active_copy():
    peft = pytest.importorskip("peft")
    model = _tiny_lm()
    original = model.lm_head.weight.detach().clone()
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                             modules_to_save=["lm_head"])
    pm = peft.get_peft_model(model, config)
    head = lm_head.output_head(pm)
    assert lm_head.unwrap_model(_Wrapper(pm)) is pm.get_base_model()
    assert head is not pm.get_base_model().lm_head  # the wrapper, resolved
    assert head.weight.requires_grad  # the trained copy
    with torch.no_grad():
        head.weight.add_(1.0)
    with pm.disable_adapter():
        frozen = lm_head.output_head(pm)
        assert frozen is not head
        torch.testing.assert_close(frozen.weight, original)  # the original, untouched
    assert lm_head.output_head(pm) is head


def test_lora_on_lm_head_is_refused_with_the_way_out():
    peft = pytest.importorskip("peft")
    pm = peft.get_peft_model(_tiny_lm(), peft.LoraConfig(r=2, target_modules=["lm_head", "q_proj"]))
    with pytest.raises(TypeError, match="modules_to_save"):
        lm_head.output_head(pm)


def test_effective_temperature_follows_the_logit_scale_and_refuses_softcapping():
    cfg = types.SimpleNamespace
    assert lm_head.effective_temperature(cfg(), 0.8) == 0.8
    assert lm_head.effective_temperature(cfg(logit_scale=2.0), 0.8) == pytest.approx(0.4)
    assert lm_head.effective_temperature(cfg(logits_scaling=4.0, model_type="granite"), 1.0) == 4.0
    assert lm_head.effective_temperature(cfg(logits_scaling=4.0, model_type="hyperclovax"), 1.0) == 0.25
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        lm_head.effective_temperature(cfg(final_logit_softcapping=30.0), 1.0)


def test_head_logprobs_equal_materialised_logits_and_verl_uses_it():
    torch.manual_seed(1)
    n, h, v = 11, 16, 53
    hidden = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, v, (n,))
    logp, entropy = lm_head.head_logprobs(hidden, weight, None, targets, temperature=0.7)
    logits = (hidden @ weight.t()) / 0.7
    ref = torch.log_softmax(logits, -1)
    torch.testing.assert_close(logp.double(), ref.gather(1, targets[:, None]).squeeze(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(entropy.double(), -(ref.exp() * ref).sum(-1), atol=1e-6, rtol=0)
    (g_h,) = torch.autograd.grad(logp.sum(), hidden)
    (r_h,) = torch.autograd.grad(ref.gather(1, targets[:, None]).sum(), hidden)
    torch.testing.assert_close(g_h, r_h, atol=1e-6, rtol=1e-6)
    # verl's drop-in scores through the same function
    vlogp, ventropy = sg_verl.linear_cross_entropy(hidden.detach()[None], weight.detach(), targets[None],
                                                   temperature=0.7)
    torch.testing.assert_close(vlogp, logp.detach(), atol=0, rtol=0)
    torch.testing.assert_close(ventropy, entropy.detach(), atol=0, rtol=0)
