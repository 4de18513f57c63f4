"""The published mpt-7b config.json, shrunk, with random weights in a mosaicml-style folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from export_helpers import TOL, input_ids, load_hf, logits, max_diff
from transformers import MptConfig, MptForCausalLM

from llmfoundry.export import export_to_hf, import_from_hf, load_model, source_kind
from llmfoundry.models.mpt import MPTForCausalLM

REFERENCE = Path(__file__).resolve().parents[1] / 'fixtures' / 'mpt-7b-config.json'
TINY = {'d_model': 64, 'n_heads': 4, 'n_layers': 2, 'vocab_size': 128}


def _mosaicml_weights(config: dict) -> dict[str, torch.Tensor]:
    """Random weights under mosaicml's parameter names (written independently of our model's code)."""
    g = torch.Generator().manual_seed(7)
    d, v = config['d_model'], config['vocab_size']
    w = {'transformer.wte.weight': torch.randn(v, d, generator=g) * 0.5,
         'transformer.norm_f.weight': 1 + 0.2 * torch.randn(d, generator=g)}
    for i in range(config['n_layers']):
        p = f'transformer.blocks.{i}.'
        w[p + 'norm_1.weight'] = 1 + 0.2 * torch.randn(d, generator=g)
        w[p + 'norm_2.weight'] = 1 + 0.2 * torch.randn(d, generator=g)
        w[p + 'attn.Wqkv.weight'] = torch.randn(3 * d, d, generator=g) / d**0.5
        w[p + 'attn.out_proj.weight'] = torch.randn(d, d, generator=g) / d**0.5
        w[p + 'ffn.up_proj.weight'] = torch.randn(4 * d, d, generator=g) / d**0.5
        w[p + 'ffn.down_proj.weight'] = torch.randn(d, 4 * d, generator=g) / (4 * d)**0.5
    return w


def test_mpt7b_config_imports_and_exports_natively(tmp_path):
    config = {**json.loads(REFERENCE.read_text()), **TINY}
    assert config['attn_config']['prefix_lm'] is False and config['learned_pos_emb'] is True  # the published quirks
    src = tmp_path / 'mpt-7b-tiny'
    src.mkdir()
    (src / 'config.json').write_text(json.dumps(config))
    weights = _mosaicml_weights(config)
    torch.save(weights, src / 'pytorch_model.bin')
    assert source_kind(config) == 'llmfoundry'

    ours = import_from_hf(src, dtype=torch.float32)
    assert ours.config.tokenizer_name == 'EleutherAI/gpt-neox-20b'
    assert not ours.config.learned_pos_emb and ours.config.attn_config['alibi']
    reference = MptForCausalLM(MptConfig(**{k: v for k, v in config.items() if k != 'auto_map'})).eval()
    missing, unexpected = reference.load_state_dict(weights, strict=False)
    assert missing == ['lm_head.weight'] and not unexpected  # tied to wte
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(reference, ids)) <= TOL

    assert export_to_hf(ours, tmp_path / 'hf') == 'mpt'
    assert max_diff(logits(load_hf(tmp_path / 'hf', 'MptForCausalLM'), ids), logits(ours, ids)) <= TOL


def test_mpt7b_folder_loads_with_from_pretrained_and_load_model(tmp_path):
    config = {**json.loads(REFERENCE.read_text()), **TINY}
    (tmp_path / 'config.json').write_text(json.dumps(config))
    weights = _mosaicml_weights(config)
    torch.save(weights, tmp_path / 'pytorch_model.bin')
    ours = MPTForCausalLM.from_pretrained(tmp_path).eval()  # mosaicml's keys mean what ours do
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(import_from_hf(tmp_path), ids)) == 0
    assert max_diff(logits(load_model(tmp_path), ids), logits(ours, ids)) == 0
