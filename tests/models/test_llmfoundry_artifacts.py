"""Folders written by MosaicML's llm-foundry 0.22.0 itself load here with llm-foundry's own logits.

The fixtures (tests/fixtures/llmfoundry/, made by scripts/make_llmfoundry_fixtures.sh) hold config.json exactly as
llm-foundry's save_pretrained writes it, the weights, and the logits llm-foundry's MPTForCausalLM computed in fp32.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmfoundry.export import choose_format, export_to_hf, import_from_hf, load_model
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

FIXTURES = Path(__file__).resolve().parents[1] / 'fixtures' / 'llmfoundry'
# folder -> (no_bias, attention_bias) as llm-foundry wrote them (None resolved to `not no_bias`).
VARIANTS = {
    'mpt_bias_default': (False, True),
    'mpt_bias_attn_off': (False, False),
    'mpt_bias_attn_on': (False, True),
    'mpt_nobias_default': (True, False),
    'mpt_nobias_attn_off': (True, False),
    'mpt_nobias_attn_on': (True, True),
}
TOL = 1e-5


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def _expected(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / 'expected.safetensors')


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_llmfoundry_folder_loads_with_its_logits(name):
    folder = FIXTURES / name
    expected = _expected(folder)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no "weights not initialised from the checkpoint" and no ignored keys
        model, info = MPTForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info
    assert (model.config.no_bias, model.config.attention_bias) == VARIANTS[name]
    torch.testing.assert_close(_logits(model, expected['input_ids']), expected['logits'], atol=TOL, rtol=TOL)
    torch.testing.assert_close(_logits(load_model(folder), expected['input_ids']), expected['logits'],
                               atol=TOL, rtol=TOL)


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_llmfoundry_config_json_reads_back_with_the_same_values(name):
    written = json.loads((FIXTURES / name / 'config.json').read_text())
    ours = MPTConfig.from_pretrained(FIXTURES / name).to_dict()
    for key in ('d_model', 'n_heads', 'n_layers', 'max_seq_len', 'vocab_size', 'no_bias', 'attention_bias',
                'learned_pos_emb', 'norm_type', 'expansion_ratio', 'architectures', 'auto_map'):
        assert ours[key] == written[key], key
    for key, value in written['attn_config'].items():
        assert ours['attn_config'][key] == value, key


def test_every_key_of_llmfoundry_to_dict_is_accepted():
    """save_pretrained drops keys at transformers' defaults; this is the whole to_dict(), generation keys included."""
    written = json.loads((FIXTURES / 'config_to_dict.json').read_text())
    assert {'transformers_version', 'torch_dtype', '_attn_implementation_autoset', 'fc_type', 'num_beams',
            'attention_bias', 'block_overrides', 'use_pad_tok_in_ffn'} <= set(written)
    config = MPTConfig(**written)
    assert config.attention_bias is True and config.no_bias is False and config.num_beams == 1
    assert config.to_dict()['init_config'] == written['init_config']


def test_attention_bias_model_exports_to_remote_code_with_identical_logits(tmp_path):
    folder = FIXTURES / 'mpt_nobias_attn_on'  # q/k/v bias and no other bias: no native class has that
    expected = _expected(folder)
    model = MPTForCausalLM.from_pretrained(folder)
    assert choose_format(model.config) == 'remote_code'
    assert export_to_hf(model, tmp_path / 'out') == 'remote_code'
    exported = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert (exported['no_bias'], exported['attention_bias']) == (True, True)
    reloaded = import_from_hf(tmp_path / 'out')
    assert torch.equal(_logits(reloaded, expected['input_ids']), _logits(model, expected['input_ids']))
