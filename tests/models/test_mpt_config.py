"""MPTConfig: llm-foundry's keys and defaults, legacy keys mapped, everything else rejected helpfully."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.models.mpt.position import alibi_slopes

REFERENCE_CONFIG = Path(__file__).resolve().parents[1] / 'fixtures' / 'mpt-7b-config.json'


def test_llm_foundry_defaults():
    config = MPTConfig()
    assert (config.d_model, config.n_heads, config.n_layers, config.max_seq_len) == (2048, 16, 24, 2048)
    assert config.vocab_size == 50368 and config.expansion_ratio == 4
    assert config.learned_pos_emb is True and config.no_bias is False
    assert config.norm_type == 'low_precision_layernorm' and config.norm_eps == 1e-5
    assert config.attn_config['attn_impl'] == 'flash' and config.attn_config['alibi'] is False
    assert config.attn_config['kv_n_heads'] == 16  # multihead_attention: one kv head per query head
    assert config.init_config['name'] == 'kaiming_normal_' and config.init_config['init_div_is_residual'] is True
    assert config.tie_word_embeddings is True and config.ffn_hidden_size == 8192


def test_published_mpt7b_config_json_is_accepted_and_mapped():
    raw = json.loads(REFERENCE_CONFIG.read_text())
    config = MPTConfig.from_dict(raw)
    assert config.learned_pos_emb is False  # alibi on: learned positions dropped, as upstream does
    assert config.attn_config['alibi'] and config.attn_config['attn_impl'] == 'torch'
    assert config.tokenizer_name == 'EleutherAI/gpt-neox-20b'
    assert (config.d_model, config.n_heads, config.n_layers, config.vocab_size) == (4096, 32, 32, 50432)
    assert config.no_bias and config.norm_type == 'low_precision_layernorm'


def test_newer_llm_foundry_keys_accepted_at_their_noop_values():
    config = MPTConfig(
        d_model=32, n_heads=2, n_layers=1, fc_type='torch', block_overrides=None, use_pad_tok_in_ffn=True,
        attn_config={
            'attn_logit_softcapping': None, 'kv_dim': None, 'nope': False,
            'rope_dail_config': {'type': 'original', 'pos_idx_in_fp32': True, 'xpos_scale_base': 512},
            'rope_hf_config': {'type': 'no_scaling', 'factor': 1.0},
            'attn_temperature_tuning': {'floor_scale': 8192, 'attn_scale': 0.0},
        },
        ffn_config={'fc_type': 'torch'},
        init_config={'verbose': 0},
    )
    assert config.attn_config['nope'] is False


@pytest.mark.parametrize(
    ('kwargs', 'expected'),
    [
        ({'n_layer': 2}, "unknown key 'n_layer'. Did you mean 'n_layers'?"),
        ({'attn_config': {'alibi_bias_mx': 4}},
         "unknown key 'attn_config.alibi_bias_mx'. Did you mean 'alibi_bias_max'?"),
        ({'ffn_config': {'ffn_typ': 'mptglu'}}, "unknown key 'ffn_config.ffn_typ'. Did you mean 'ffn_type'?"),
        ({'init_config': {'nam': 'baseline_'}}, "unknown key 'init_config.nam'. Did you mean 'name'?"),
        ({'attn_config': {'attn_impl': 'triton'}},
         "attn_config.attn_impl='triton' is invalid; allowed: torch, flex, flash"),
        ({'attn_config': {'attn_type': 'grouped_query_attention', 'kv_n_heads': 3}},
         'attn_config.kv_n_heads=3 is invalid; allowed: a positive divisor of n_heads=4'),
        ({'n_heads': 3}, 'd_model=32 is not divisible by n_heads=3'),
        ({'attn_config': {'alibi': True, 'rope': True}}, 'choose at most one position scheme'),
        ({'attn_config': {'prefix_lm': True}}, 'not supported: attn_config.prefix_lm=True'),
        ({'prefix_lm': True}, 'not supported: prefix_lm=True'),
        ({'fc_type': 'te'}, "not supported: fc_type='te'"),
        ({'ffn_config': {'fc_type': 'te'}}, "not supported: ffn_config.fc_type='te'"),
        ({'block_overrides': {'order': []}}, 'not supported: block_overrides='),
        ({'use_pad_tok_in_ffn': False}, 'not supported: use_pad_tok_in_ffn=False'),
        ({'attn_config': {'kv_dim': 16}}, 'not supported: attn_config.kv_dim=16'),
        ({'attn_config': {'attn_temperature_tuning': {'attn_scale': 0.5}}},
         'not supported: attn_config.attn_temperature_tuning.attn_scale=0.5'),
        ({'attn_config': {'rope': True, 'rope_dail_config': {'type': 'xpos'}}},
         "not supported: attn_config.rope_dail_config.type='xpos'"),
        ({'attn_config': {'rope': True, 'rope_impl': 'hf', 'rope_hf_config': {'type': 'llama3', 'factor': 8}}},
         "needs low_freq_factor, high_freq_factor, original_max_position_embeddings"),
        ({'attn_config': {'rope': True, 'rope_hf_config': {'type': 'linear', 'factor': 2}}},
         "only applies with attn_config.rope_impl='hf'"),
        ({'attn_config': {'qk_ln': True, 'qk_gn': True}}, 'qk_ln and attn_config.qk_gn are exclusive'),
        ({'attn_config': {'attn_impl': 'flex', 'attn_pdrop': 0.1}}, 'not supported: attn_config.attn_pdrop=0.1'),
        ({'init_config': {'name': 'baseline_'}}, "needs init_config.init_std"),
        ({'init_config': {'name': 'orthogonal_'}}, "init_config.name='orthogonal_' is invalid"),
        ({'norm_type': 'batchnorm'}, "norm_type='batchnorm' is invalid; allowed: layernorm"),
        ({'ffn_config': {'ffn_type': 'mb_moe'}}, "ffn_config.ffn_type='mb_moe' is invalid; allowed: mptmlp, mptglu"),
        ({'ffn_config': {'ffn_act_fn': {'name': 'swish'}}}, "ffn_config.ffn_act_fn.name='swish' is invalid"),
        ({'logit_scale': 'sqrt'}, "logit_scale='sqrt' is invalid"),
        ({'embedding_fraction': 0}, 'embedding_fraction=0 is invalid'),
        ({'init_device': 'tpu'}, "init_device='tpu' is invalid"),
        ({'attn_config': {'sliding_window_size': -5}}, 'attn_config.sliding_window_size=-5 is invalid'),
    ],
)
def test_bad_configs_name_the_key_and_what_is_allowed(kwargs, expected):
    base = {'d_model': 32, 'n_heads': 4, 'n_layers': 1}
    with pytest.raises(ValueError) as error:
        MPTConfig(**{**base, **kwargs})
    assert expected in str(error.value)


def test_transformers_own_keys_are_accepted():
    config = MPTConfig(d_model=32, n_heads=2, n_layers=1, architectures=['MPTForCausalLM'], torch_dtype='float32',
                       transformers_version='4.28.1', auto_map={'AutoConfig': 'x.Y'}, layer_norm_epsilon=1e-6,
                       initializer_range=0.02, verbose=0)
    assert config.norm_eps == 1e-6


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    config = MPTConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=64, max_seq_len=32, no_bias=True,
                       attn_config={'attn_impl': 'torch', 'rope': True, 'rope_impl': 'hf',
                                    'rope_hf_config': {'type': 'linear', 'factor': 2.0},
                                    'attn_type': 'grouped_query_attention', 'kv_n_heads': 2},
                       ffn_config={'ffn_type': 'mptglu', 'ffn_act_fn': {'name': 'silu'}}, norm_type='rmsnorm')
    model = MPTForCausalLM(config).eval()
    model.save_pretrained(tmp_path)
    loaded = MPTForCausalLM.from_pretrained(tmp_path).eval()
    saved, original = loaded.config.to_dict(), model.config.to_dict()
    saved.pop('_name_or_path'), original.pop('_name_or_path')
    assert saved == original
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def _spec_slopes(n_heads: int, bias_max: float) -> list[float]:
    padded = 1
    while padded < n_heads:
        padded *= 2
    slopes = [2 ** (-k * bias_max / padded) for k in range(1, padded + 1)]  # s_1 .. s_H'
    if padded != n_heads:
        slopes = (slopes[1::2] + slopes[0::2])[:n_heads]  # [s_2, s_4, ..., s_1, s_3, ...]
    return slopes


@pytest.mark.parametrize(('n_heads', 'bias_max'), [(8, 8), (32, 8), (6, 8), (12, 8), (3, 4), (1, 8)])
def test_alibi_slopes_follow_the_published_formula(n_heads, bias_max):
    assert alibi_slopes(n_heads, bias_max).tolist() == pytest.approx(_spec_slopes(n_heads, bias_max), rel=1e-7)
    if n_heads == 6:
        assert _spec_slopes(6, 8) == [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]


def test_a_misspelt_key_gets_the_nearest_keys_not_the_whole_list():
    with pytest.raises(ValueError) as caught:
        MPTConfig(d_modle=64)
    assert str(caught.value) == "MPTConfig: unknown key 'd_modle'. Did you mean 'd_model'?"
    with pytest.raises(ValueError,
                       match=r"unknown key 'zzz'\. Valid keys here: attention_bias, attn_config, .*vocab_size\."):
        MPTConfig(zzz=1)  # nothing is close: the valid keys are the useful answer


# (no_bias, attention_bias) -> (q/k/v bias, bias everywhere else), as llm-foundry 0.22 resolves them.
BIAS_SWITCHES = {
    (False, None): (True, True),
    (False, True): (True, True),
    (False, False): (False, True),
    (True, None): (False, False),
    (True, True): (True, False),
    (True, False): (False, False),
}


@pytest.mark.parametrize('fused_qkv', [True, False])
@pytest.mark.parametrize(('no_bias', 'attention_bias'), sorted(BIAS_SWITCHES, key=str))
def test_attention_bias_switches_only_the_qkv_projections(no_bias, attention_bias, fused_qkv):
    qkv_bias, other_bias = BIAS_SWITCHES[(no_bias, attention_bias)]
    config = MPTConfig(d_model=16, n_heads=2, n_layers=1, vocab_size=32, max_seq_len=8, no_bias=no_bias,
                       attention_bias=attention_bias, attn_config={'attn_impl': 'torch', 'fused_qkv': fused_qkv})
    assert config.attention_bias is qkv_bias  # stored resolved, as llm-foundry writes it to config.json
    assert MPTConfig(**config.to_dict()).attention_bias is qkv_bias
    names = {name for name, _ in MPTForCausalLM(config).named_parameters()}
    qkv = ['attn.Wqkv'] if fused_qkv else ['attn.Wq', 'attn.Wk', 'attn.Wv']
    for module in qkv:
        assert (f'transformer.blocks.0.{module}.bias' in names) is qkv_bias
    for module in ('blocks.0.attn.out_proj', 'blocks.0.ffn.up_proj', 'blocks.0.ffn.down_proj', 'blocks.0.norm_1',
                   'norm_f'):
        assert (f'transformer.{module}.bias' in names) is other_bias


def test_attention_bias_must_be_a_bool_or_null():
    with pytest.raises(ValueError, match=r"attention_bias='yes' is invalid; allowed: true, false or null"):
        MPTConfig(attention_bias='yes')
