"""Exact interop with transformers' native MptForCausalLM, both directions."""

from __future__ import annotations

import pytest
import torch
from export_helpers import (
    MPT_BASE,
    TOL,
    assert_native_export_exact,
    assert_same_greedy,
    input_ids,
    load_hf,
    logits,
    max_diff,
    tiny_model,
)
from transformers import MptConfig, MptForCausalLM

from llmfoundry.export import export_to_hf, import_from_hf


@pytest.mark.parametrize('n_heads', [3, 6, 12])
def test_export_matches_native_mpt(tmp_path, n_heads):
    ours = tiny_model(MPT_BASE, n_heads=n_heads)
    assert export_to_hf(ours, tmp_path / 'hf') == 'mpt'
    theirs = load_hf(tmp_path / 'hf', 'MptForCausalLM')
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(theirs, ids)) <= TOL
    # Left padding: the kept positions must agree too.
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    kept = mask.bool()
    assert max_diff(logits(ours, ids, attention_mask=mask)[kept], logits(theirs, ids, attention_mask=mask)[kept]) <= TOL
    assert_same_greedy(ours, theirs, ids[:, :8])


@pytest.mark.parametrize('overrides', [
    {'attn_config': {'clip_qkv': 0.5}},
    {'attn_config': {'softmax_scale': 0.2}},
    {'attn_config': {'fused_qkv': False}},  # fused on export: same math
    {'norm_type': 'layernorm', 'norm_eps': 1e-3},
    {'attn_config': {'attn_type': 'grouped_query_attention', 'kv_n_heads': 6}},  # GQA with kv == heads is MHA
], ids=['clip_qkv', 'softmax_scale', 'unfused_qkv', 'layernorm_eps', 'gqa_full'])
def test_native_mpt_fields_it_honours(tmp_path, overrides):
    assert_native_export_exact(tiny_model(MPT_BASE, **overrides), tmp_path / 'hf', 'mpt', 'MptForCausalLM')


@pytest.mark.parametrize('n_heads', [3, 12])
def test_import_native_mpt(tmp_path, n_heads):
    torch.manual_seed(n_heads)
    config = MptConfig(d_model=48, n_heads=n_heads, n_layers=2, vocab_size=128, max_seq_len=64)
    theirs = MptForCausalLM(config).eval()
    with torch.no_grad():  # transformers initialises norms to 1: randomise them so that a swap would show
        for name, param in theirs.named_parameters():
            if 'norm' in name:
                param.normal_(1.0, 0.2)
    theirs.save_pretrained(tmp_path / 'native')
    ours = import_from_hf(tmp_path / 'native')
    assert ours.config.attn_config['alibi'] and ours.config.no_bias and not ours.config.learned_pos_emb
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(theirs, ids)) <= TOL
    assert_same_greedy(ours, theirs, ids[:, :8])


def test_import_native_mpt_follows_what_the_class_computes(tmp_path):
    # transformers' MPT stores expansion_ratio and attn_config.alibi but hard-codes 4 and ALiBi.
    torch.manual_seed(0)
    theirs = MptForCausalLM(MptConfig(d_model=32, n_heads=4, n_layers=1, vocab_size=128, max_seq_len=32,
                                      expansion_ratio=2, attn_config={'alibi': False})).eval()
    theirs.save_pretrained(tmp_path / 'native')
    with pytest.warns(UserWarning, match='expansion_ratio=2.*attn_config.alibi=False'):
        ours = import_from_hf(tmp_path / 'native')
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(theirs, ids)) <= TOL


def test_max_seq_len_raises_native_alibi_range(tmp_path):
    ours = tiny_model(MPT_BASE)
    export_to_hf(ours, tmp_path / 'hf', max_seq_len=128)
    theirs = load_hf(tmp_path / 'hf', 'MptForCausalLM')
    assert theirs.config.max_seq_len == 128
    ids = input_ids(batch=1, seq=100)  # longer than the model's own max_seq_len=64: ALiBi extrapolates
    assert max_diff(logits(ours, ids), logits(theirs, ids)) <= TOL
    with pytest.raises(ValueError, match='can only be raised'):
        export_to_hf(ours, tmp_path / 'lower', max_seq_len=32)


def test_import_untied_native_mpt(tmp_path):
    torch.manual_seed(1)
    theirs = MptForCausalLM(MptConfig(d_model=32, n_heads=4, n_layers=1, vocab_size=128, max_seq_len=32,
                                      tie_word_embeddings=False)).eval()
    with torch.no_grad():
        theirs.lm_head.weight.normal_()  # distinct from wte
    theirs.save_pretrained(tmp_path / 'native')
    ours = import_from_hf(tmp_path / 'native')
    assert not ours.config.tie_word_embeddings
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(theirs, ids)) <= TOL
