"""count_parameters and flops_per_token against independent counts (meta-model numel, FlopCounterMode)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from llmfoundry.models.accounting import count_parameters, flops_per_token
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

TINY: dict[str, Any] = {'d_model': 64, 'n_heads': 8, 'n_layers': 2, 'vocab_size': 96, 'max_seq_len': 32}
GQA = {'attn_type': 'grouped_query_attention', 'kv_n_heads': 2}
VARIANTS: dict[str, dict[str, Any]] = {
    'mha_alibi_no_bias': {'no_bias': True, 'attn_config': {'alibi': True}},
    'mha_learned_pos_biases': {'learned_pos_emb': True},
    'gqa': {'no_bias': True, 'attn_config': GQA},
    'mqa_biases': {'attn_config': {'attn_type': 'multiquery_attention'}},
    'gqa_unfused_qkv_biases': {'attn_config': {**GQA, 'fused_qkv': False}},
    'mptglu_rmsnorm': {'no_bias': True, 'norm_type': 'rmsnorm', 'attn_config': {'rope': True},
                       'ffn_config': {'ffn_type': 'mptglu', 'ffn_hidden_size': 96, 'ffn_act_fn': {'name': 'silu'}}},
    'mptglu_biases_untied': {'tie_word_embeddings': False, 'ffn_config': {'ffn_type': 'mptglu'}},
    'untied_learned_pos': {'tie_word_embeddings': False, 'no_bias': True},
    'qk_ln_gqa_biases': {'attn_config': {**GQA, 'qk_ln': True}},
    'qk_gn_rmsnorm_biases': {'norm_type': 'rmsnorm', 'attn_config': {'qk_gn': True}},
    'head_dim_override_gqa': {'head_dim': 16, 'no_bias': True, 'attn_config': GQA},
    'expansion_ratio_3': {'expansion_ratio': 3},
    'no_bias_attention_bias_on': {'no_bias': True, 'attention_bias': True},
    'biases_attention_bias_off': {'attention_bias': False, 'attn_config': {'fused_qkv': False}},
}


def _config(variant: str, **overrides: Any) -> MPTConfig:
    return MPTConfig(**{**TINY, **VARIANTS[variant], 'attn_config': {'attn_impl': 'torch',
                        **VARIANTS[variant].get('attn_config', {})}, **overrides})


@pytest.mark.parametrize('variant', VARIANTS)
def test_count_matches_meta_model_numel(variant: str) -> None:
    model = MPTForCausalLM(_config(variant, init_device='meta'))
    numel = sum(p.numel() for p in model.parameters())  # tied weights are yielded once
    assert count_parameters(model.config) == numel == count_parameters(model)
    wte = model.transformer.wte.weight.numel()
    wpe = model.transformer.wpe.weight.numel() if model.config.learned_pos_emb else 0
    expected = numel - wte - wpe
    assert count_parameters(model.config, exclude_embeddings=True) == expected
    assert count_parameters(model, exclude_embeddings=True) == expected


def test_untied_head_counts_once_more_and_stays_in_non_embedding_count() -> None:
    tied, untied = _config('untied_learned_pos', tie_word_embeddings=True), _config('untied_learned_pos')
    head = TINY['vocab_size'] * TINY['d_model']
    assert count_parameters(untied) - count_parameters(tied) == head
    assert count_parameters(untied, exclude_embeddings=True) - count_parameters(tied, exclude_embeddings=True) == head


def test_trainable_only_skips_frozen_parameters() -> None:
    model = MPTForCausalLM(_config('gqa', init_device='meta'))
    model.transformer.wte.weight.requires_grad_(False)
    frozen = model.transformer.wte.weight.numel()
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - frozen


def test_mpt_7b_has_the_published_parameter_count() -> None:
    config = MPTConfig(d_model=4096, n_heads=32, n_layers=32, vocab_size=50432, max_seq_len=2048, no_bias=True,
                       attn_config={'alibi': True}, init_device='meta')
    assert count_parameters(config) == 6_649_286_656
    assert sum(p.numel() for p in MPTForCausalLM(config).parameters()) == 6_649_286_656


def test_mpt_7b_flops_per_token_by_hand() -> None:
    # 6N convention: 6 * (12 L d^2 + V d) for the matmuls, + 3 * 4 L s d for attention.
    config = MPTConfig(d_model=4096, n_heads=32, n_layers=32, vocab_size=50432, no_bias=True,
                       attn_config={'alibi': True})
    d, layers, seq = 4096, 32, 2048
    expected = 6 * (12 * layers * d * d + 50432 * d) + 12 * layers * seq * d
    assert flops_per_token(config, seq) == expected == 43_115_347_968


@pytest.mark.parametrize('variant', ['mha_alibi_no_bias', 'gqa', 'mqa_biases', 'mptglu_rmsnorm',
                                     'mptglu_biases_untied', 'head_dim_override_gqa', 'mha_learned_pos_biases'])
@pytest.mark.parametrize('seq_len', [8, 24])
def test_flops_match_flop_counter_on_forward_and_backward(variant: str, seq_len: int) -> None:
    """FlopCounterMode counts every matmul of the real forward + backward pass, 2 FLOPs per multiply-add:
    the linear layers (incl. the LM head), their input and weight gradients, and attention's Q K^T and
    P V (and their 4 backward matmuls) over the full seq_len x seq_len scores, mask or not. That is exactly
    the convention of flops_per_token, so the two agree exactly; biases, norms and softmax are not matmuls
    and are in neither count. SDPA's fused CPU kernel has no FlopCounterMode formula (it would count 0), so
    the math backend runs: it computes attention with plain matmuls, which the counter sees."""
    torch.manual_seed(0)
    config = _config(variant)
    model = MPTForCausalLM(config)
    batch = 2
    input_ids = torch.randint(0, config.vocab_size, (batch, seq_len))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(input_ids, labels=input_ids).loss.backward()
    assert counter.get_total_flops() == flops_per_token(config, seq_len) * batch * seq_len


def test_attention_term_grows_linearly_with_seq_len() -> None:
    config = _config('gqa')
    per_extra_token = flops_per_token(config, 17) - flops_per_token(config, 16)
    assert per_extra_token == 3 * 4 * TINY['n_layers'] * TINY['d_model']  # GQA keeps all query heads
