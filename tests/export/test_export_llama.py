"""Exact interop with transformers' LlamaForCausalLM, both directions, rope scaling included."""

from __future__ import annotations

import pytest
import torch
from export_helpers import (
    LLAMA_BASE,
    TOL,
    assert_native_export_exact,
    assert_same_greedy,
    input_ids,
    load_hf,
    logits,
    max_diff,
    tiny_model,
)
from transformers import LlamaConfig, LlamaForCausalLM

from llmfoundry.export import export_to_hf, import_from_hf

ROPE_SCALINGS = {
    'linear': {'type': 'linear', 'factor': 2.0},
    'dynamic': {'type': 'dynamic', 'factor': 2.0},
    'llama3': {'type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
               'original_max_position_embeddings': 16},
}


@pytest.mark.parametrize(('n_heads', 'kv_n_heads'), [(6, 2), (6, 1), (3, 3), (12, 4)])
def test_export_matches_llama(tmp_path, n_heads, kv_n_heads):
    ours = tiny_model(LLAMA_BASE, n_heads=n_heads, attn_config={'kv_n_heads': kv_n_heads})
    assert export_to_hf(ours, tmp_path / 'hf') == 'llama'
    theirs = load_hf(tmp_path / 'hf', 'LlamaForCausalLM')
    assert theirs.config.num_key_value_heads == kv_n_heads
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(theirs, ids)) <= TOL
    # And back: the exported folder imports to the same model.
    assert max_diff(logits(import_from_hf(tmp_path / 'hf'), ids), logits(ours, ids)) <= TOL
    assert_same_greedy(ours, theirs, ids[:, :8])


@pytest.mark.parametrize('overrides', [
    {'no_bias': False},  # attention_bias and mlp_bias
    {'ffn_config': {'ffn_act_fn': {'name': 'gelu', 'approximate': 'tanh'}}},
    {'head_dim': 16},
    {'tie_word_embeddings': True},
    {'attn_config': {'fused_qkv': False, 'rope_impl': 'dail', 'rope_theta': 500000.0}},
    {'norm_type': 'low_precision_rmsnorm', 'norm_eps': 1e-3},
], ids=['biases', 'gelu_tanh', 'head_dim', 'tied', 'unfused_dail_theta', 'lp_rmsnorm_eps'])
def test_llama_fields_it_honours(tmp_path, overrides):
    assert_native_export_exact(tiny_model(LLAMA_BASE, **overrides), tmp_path / 'hf', 'llama', 'LlamaForCausalLM')


@pytest.mark.parametrize('scaling', sorted(ROPE_SCALINGS))
def test_rope_scaling_export_and_import(tmp_path, scaling):
    ours = tiny_model(LLAMA_BASE, max_seq_len=16, attn_config={'rope_hf_config': ROPE_SCALINGS[scaling]})
    assert export_to_hf(ours, tmp_path / 'hf') == 'llama'
    ids = input_ids(seq=40)  # past max_seq_len, where dynamic scaling starts to act
    # A fresh model per comparison: transformers' dynamic rope caches the longest length it has seen.
    assert max_diff(logits(ours, ids), logits(load_hf(tmp_path / 'hf', 'LlamaForCausalLM'), ids)) <= TOL
    assert max_diff(logits(ours, ids), logits(import_from_hf(tmp_path / 'hf'), ids)) <= TOL
    assert_same_greedy(ours, load_hf(tmp_path / 'hf', 'LlamaForCausalLM'), ids[:, :8])


@pytest.mark.parametrize('kv_heads', [2, 6])
def test_import_llama(tmp_path, kv_heads):
    torch.manual_seed(kv_heads)
    config = LlamaConfig(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
                         num_key_value_heads=kv_heads, vocab_size=128, max_position_embeddings=64, rms_norm_eps=1e-5,
                         rope_theta=5000.0, rope_scaling={'rope_type': 'linear', 'factor': 3.0})
    theirs = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            if 'norm' in name:
                param.normal_(1.0, 0.2)
    theirs.save_pretrained(tmp_path / 'llama')
    ours = import_from_hf(tmp_path / 'llama')
    assert ours.config.kv_n_heads == kv_heads and ours.config.attn_config['fused_qkv']
    assert not ours.config.tie_word_embeddings
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(theirs, ids)) <= TOL
    assert_same_greedy(ours, theirs, ids[:, :8])


@pytest.mark.parametrize(('field', 'value', 'message'), [
    ('hidden_act', 'gelu_new', 'hidden_act'),
    ('rope_scaling', {'rope_type': 'yarn', 'factor': 2.0}, 'yarn'),
    ('mlp_bias', True, 'must be equal'),
])
def test_import_llama_refuses_what_it_cannot_reproduce(tmp_path, field, value, message):
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         vocab_size=128, **{field: value})
    LlamaForCausalLM(config).save_pretrained(tmp_path / 'llama')
    with pytest.raises(ValueError, match=message):
        import_from_hf(tmp_path / 'llama')
