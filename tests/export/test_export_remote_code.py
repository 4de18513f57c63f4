"""Configs that no native class reproduces: the decision, and remote-code folders loaded without llmfoundry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from export_helpers import (
    HEAD_SCALE,
    LLAMA_BASE,
    MPT_BASE,
    TOL,
    greedy,
    input_ids,
    logits,
    max_diff,
    min_top2_margin,
    sharpen,
    tiny_model,
)
from transformers import AutoModelForCausalLM

from llmfoundry.export import choose_format, export_to_hf, import_from_hf, native_blockers
from llmfoundry.export.remote_code import REMOTE_MODEL_TYPE, source_files

# (base, overrides, the key path that must block the base's native class)
FLIPS = {
    'mpt-no-alibi': (MPT_BASE, {'attn_config': {'alibi': False}}, 'attn_config.alibi'),
    'mpt-alibi-bias-max': (MPT_BASE, {'attn_config': {'alibi_bias_max': 4}}, 'attn_config.alibi_bias_max'),
    'mpt-bias': (MPT_BASE, {'no_bias': False}, 'no_bias'),
    'mpt-attention-bias': (MPT_BASE, {'attention_bias': True}, 'attention_bias'),  # q/k/v bias only
    'mpt-gqa': (MPT_BASE, {'attn_config': {'attn_type': 'grouped_query_attention', 'kv_n_heads': 2}},
                'attn_config.attn_type'),
    'mpt-mqa': (MPT_BASE, {'attn_config': {'attn_type': 'multiquery_attention'}}, 'attn_config.attn_type'),
    'mpt-qk-ln': (MPT_BASE, {'attn_config': {'qk_ln': True}}, 'attn_config.qk_ln'),
    'mpt-qk-gn': (MPT_BASE, {'attn_config': {'qk_gn': True}}, 'attn_config.qk_gn'),
    'mpt-softcap': (MPT_BASE, {'attn_config': {'attn_logit_softcapping': 2.0}}, 'attn_config.attn_logit_softcapping'),
    'mpt-window': (MPT_BASE, {'attn_config': {'sliding_window_size': 3}}, 'attn_config.sliding_window_size'),
    'mpt-rope': (MPT_BASE, {'attn_config': {'alibi': False, 'rope': True}}, 'attn_config.rope'),
    'mpt-nope': (MPT_BASE, {'attn_config': {'alibi': False, 'nope': True}}, 'attn_config.nope'),
    'mpt-glu': (MPT_BASE, {'ffn_config': {'ffn_type': 'mptglu'}}, 'ffn_config.ffn_type'),
    'mpt-expansion': (MPT_BASE, {'expansion_ratio': 2}, 'expansion_ratio'),
    'mpt-ffn-hidden': (MPT_BASE, {'ffn_config': {'ffn_hidden_size': 100}}, 'expansion_ratio'),
    'mpt-silu': (MPT_BASE, {'ffn_config': {'ffn_act_fn': {'name': 'silu'}}}, 'ffn_config.ffn_act_fn'),
    'mpt-gelu-tanh': (MPT_BASE, {'ffn_config': {'ffn_act_fn': {'name': 'gelu', 'approximate': 'tanh'}}},
                      'ffn_config.ffn_act_fn'),
    'mpt-rmsnorm': (MPT_BASE, {'norm_type': 'rmsnorm'}, 'norm_type'),
    'mpt-logit-scale': (MPT_BASE, {'logit_scale': 0.5}, 'logit_scale'),
    'mpt-logit-scale-inv-sqrt': (MPT_BASE, {'logit_scale': 'inv_sqrt_d_model'}, 'logit_scale'),
    'mpt-final-softcap': (MPT_BASE, {'final_logit_softcapping': 20.0}, 'final_logit_softcapping'),
    'mpt-embedding-fraction': (MPT_BASE, {'embedding_fraction': 0.5}, 'embedding_fraction'),
    'mpt-head-dim': (MPT_BASE, {'head_dim': 16}, 'head_dim'),
    'mpt-untied': (MPT_BASE, {'tie_word_embeddings': False}, 'tie_word_embeddings'),
    'llama-qk-ln': (LLAMA_BASE, {'attn_config': {'qk_ln': True}}, 'attn_config.qk_ln'),
    'llama-qk-gn': (LLAMA_BASE, {'attn_config': {'qk_gn': True}}, 'attn_config.qk_gn'),
    'llama-clip-qkv': (LLAMA_BASE, {'attn_config': {'clip_qkv': 0.3}}, 'attn_config.clip_qkv'),
    'llama-softmax-scale': (LLAMA_BASE, {'attn_config': {'softmax_scale': 0.2}}, 'attn_config.softmax_scale'),
    'llama-softcap': (LLAMA_BASE, {'attn_config': {'attn_logit_softcapping': 2.0}},
                      'attn_config.attn_logit_softcapping'),
    'llama-window': (LLAMA_BASE, {'attn_config': {'sliding_window_size': 3}}, 'attn_config.sliding_window_size'),
    'llama-no-rope': (LLAMA_BASE, {'attn_config': {'rope': False}}, 'attn_config.rope'),
    'llama-mlp': (LLAMA_BASE, {'ffn_config': {'ffn_type': 'mptmlp'}}, 'ffn_config.ffn_type'),
    'llama-layernorm': (LLAMA_BASE, {'norm_type': 'layernorm'}, 'norm_type'),
    # Llama's attention_bias covers o_proj too: q/k/v bias without an out_proj bias, or the reverse, is not Llama.
    'llama-attention-bias': (LLAMA_BASE, {'attention_bias': True}, 'attention_bias'),
    'llama-attention-bias-off': (LLAMA_BASE, {'no_bias': False, 'attention_bias': False}, 'attention_bias'),
    'llama-logit-scale': (LLAMA_BASE, {'logit_scale': 0.5}, 'logit_scale'),
    'llama-final-softcap': (LLAMA_BASE, {'final_logit_softcapping': 20.0}, 'final_logit_softcapping'),
    'llama-embedding-fraction': (LLAMA_BASE, {'embedding_fraction': 0.5}, 'embedding_fraction'),
}


@pytest.fixture(scope='module')
def remote_runs(tmp_path_factory):
    """Export every flipped config, then load all folders in ONE subprocess (imports cost seconds each)."""
    root = tmp_path_factory.mktemp('remote')
    ids = input_ids()
    torch.save(ids, root / 'ids.pt')
    ours, folders, formats = {}, {}, {}
    for name, (base, overrides, _) in FLIPS.items():
        ours[name] = tiny_model(base, **overrides)
        folders[name] = str(root / name.replace('-', '_'))
        formats[name] = export_to_hf(ours[name], folders[name])
    job = {'folders': folders, 'ids': str(root / 'ids.pt'), 'out': str(root / 'out.pt'), 'head_scale': HEAD_SCALE}
    (root / 'job.json').write_text(json.dumps(job))
    env = {**os.environ, 'HF_MODULES_CACHE': str(root / 'modules'), 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}
    env.pop('PYTHONPATH', None)
    loader = Path(__file__).with_name('remote_loader.py')
    subprocess.run([sys.executable, str(loader), str(root / 'job.json')], check=True, cwd=root, env=env,
                   stdin=subprocess.DEVNULL, timeout=240)
    return ours, folders, formats, torch.load(root / 'out.pt'), ids


@pytest.mark.parametrize('name', sorted(FLIPS))
def test_flipped_field_takes_remote_code_path(remote_runs, name):
    base, overrides, blocking_path = FLIPS[name]
    ours, folders, formats, results, ids = remote_runs
    base_format = 'mpt' if base is MPT_BASE else 'llama'
    assert choose_format(tiny_model(base).config) == base_format  # the base itself is native
    assert blocking_path in native_blockers(ours[name].config)[base_format]
    assert formats[name] == 'remote_code'
    assert json.loads((Path(folders[name]) / 'config.json').read_text())['model_type'] == REMOTE_MODEL_TYPE
    assert results[name]['module'].startswith('transformers_modules.')  # built from the folder's own code
    assert max_diff(logits(ours[name], ids), results[name]['logits']) <= TOL
    # Our importer reads our own remote-code folders back.
    assert torch.equal(logits(import_from_hf(folders[name]), ids), logits(ours[name], ids))
    sharpen(ours[name])  # as the subprocess did to its copy before generating
    tokens = greedy(ours[name], ids[:, :8])
    assert min_top2_margin(ours[name], ids[:, :8], tokens) > 1e-3
    assert torch.equal(tokens, results[name]['tokens'])


def test_loading_remote_code_without_trust_raises(remote_runs, tmp_path):
    _, folders, _, results, _ = remote_runs
    assert 'trust_remote_code=True' in results['untrusted_error']  # the subprocess, with no answer on stdin
    with pytest.raises(ValueError, match='trust_remote_code=True'):
        AutoModelForCausalLM.from_pretrained(folders['mpt-untied'], trust_remote_code=False)


def test_remote_code_files_are_the_package_source(tmp_path):
    model = tiny_model(MPT_BASE, logit_scale=0.5)
    assert export_to_hf(model, tmp_path / 'hf') == 'remote_code'
    files = {path.name: path for path in source_files()}
    assert {'configuration_mpt.py', 'modeling_mpt.py', 'attention.py', 'layers.py', 'position.py'} <= set(files)
    for name, path in files.items():
        copied = (tmp_path / 'hf' / name).read_text()
        if name == 'configuration_mpt.py':
            assert copied == path.read_text().replace("model_type = 'mpt'", f"model_type = '{REMOTE_MODEL_TYPE}'")
        else:
            assert copied == path.read_text()


def test_remote_code_can_be_forced_for_a_native_config(tmp_path):
    assert export_to_hf(tiny_model(MPT_BASE), tmp_path / 'hf', remote_code=True) == 'remote_code'
