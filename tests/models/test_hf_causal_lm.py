"""hf_causal_lm's keys (llm-foundry 0.22's list: act, warn once that they do nothing, or refuse) and its meta path in
one process: pretrained weights read from (sharded) safetensors equal from_pretrained's, random init is
deterministic, buffers and tied weights survive."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MptConfig

from llmfoundry.config.schema import FSDPConfig
from llmfoundry.config.validation import ConfigError
from llmfoundry.models import hf_causal_lm
from llmfoundry.models.builders import build_model
from llmfoundry.train.parallel import parallelize

VOCAB = 64
LLAMA = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2)
GPT2 = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=4, n_positions=32)


def saved(folder: Path, config, **save_kwargs) -> Path:
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder, **save_kwargs)
    return folder


def build(folder: Path, **keys) -> torch.nn.Module:
    return build_model({'name': 'hf_causal_lm', 'pretrained_model_name_or_path': str(folder), **keys})


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(hf_causal_lm, '_warned', set())


@pytest.fixture(scope='module')
def llama(tmp_path_factory) -> Path:
    return saved(tmp_path_factory.mktemp('llama'), LLAMA)


# ----- config_overrides ----------------------------------------------------------------------------------------
def test_config_overrides_merge_into_nested_sub_configs_and_dicts(tmp_path: Path) -> None:
    folder = saved(tmp_path, MptConfig(d_model=16, n_heads=4, n_layers=2, vocab_size=VOCAB, max_seq_len=32))
    model = build(folder, pretrained=False, config_overrides={'attn_config': {'softmax_scale': 0.5}, 'n_layers': 1})
    attn = model.config.attn_config
    assert (attn.softmax_scale, attn.alibi, attn.attn_impl, attn.alibi_bias_max) == (0.5, True, 'torch', 8)
    assert len(model.transformer.blocks) == 1

    config = MptConfig()
    config.extra = {'outer': {'a': 1, 'b': 2}, 'c': 3}
    hf_causal_lm.apply_config_overrides(config, {'extra': {'outer': {'a': 9}}, 'max_seq_len': 7})
    assert config.extra == {'outer': {'a': 9, 'b': 2}, 'c': 3} and config.max_seq_len == 7
    rope = LlamaConfig()  # rope_scaling None: a mapping sets it
    hf_causal_lm.apply_config_overrides(rope, {'rope_scaling': {'rope_type': 'linear', 'factor': 2.0}})
    assert rope.rope_scaling == {'rope_type': 'linear', 'factor': 2.0}


@pytest.mark.parametrize(('overrides', 'match'), [
    ({'n_layerz': 1}, "model.config_overrides.n_layerz: MptConfig has no attribute 'n_layerz'"),
    ({'attn_config': {'softmax_scal': 0.5}}, "model.config_overrides.attn_config.softmax_scal: MptAttentionConfig"),
])
def test_unknown_override_keys_are_named(overrides, match) -> None:
    with pytest.raises(ConfigError, match=match):
        hf_causal_lm.apply_config_overrides(MptConfig(), overrides)
    config = MptConfig()
    config.extra = {'a': 1}
    with pytest.raises(ConfigError, match=r'model.config_overrides.extra.b: unknown key; .* has: a'):
        hf_causal_lm.apply_config_overrides(config, {'extra': {'b': 2}})


# ----- keys ----------------------------------------------------------------------------------------------------
def test_use_auth_token_is_passed_as_token_with_one_warning(llama, monkeypatch, caplog) -> None:
    seen = []
    real = hf_causal_lm.AutoConfig.from_pretrained

    def spy(name, **kwargs):
        seen.append((kwargs['token'], kwargs['trust_remote_code'], kwargs['use_cache']))
        return real(name, **kwargs)

    monkeypatch.setattr(hf_causal_lm.AutoConfig, 'from_pretrained', spy)
    with caplog.at_level(logging.WARNING):
        build(llama, pretrained=False, use_auth_token=True)
        build(llama, pretrained=False, use_auth_token='hf_x', token='hf_x')
        build(llama, pretrained=False, token='hf_y')
    # trust_remote_code defaults to true (llm-foundry's default); use_cache is off for training
    assert seen == [(True, True, False), ('hf_x', True, False), ('hf_y', True, False)]
    assert caplog.text.count('model.use_auth_token is deprecated') == 1
    with pytest.raises(ConfigError, match='use_auth_token and model.token disagree'):
        build(llama, use_auth_token='a', token='b')


def test_attn_implementation_is_passed_on(llama) -> None:
    assert build(llama, pretrained=False, attn_implementation='eager').config._attn_implementation == 'eager'


@pytest.mark.skipif(importlib.util.find_spec('flash_attn') is not None, reason='flash_attn is installed')
def test_flash_attention_2_without_flash_attn_is_refused(llama) -> None:
    with pytest.raises(ConfigError, match='use_flash_attention_2: true needs the flash_attn package'):
        build(llama, use_flash_attention_2=True)
    with pytest.raises(ConfigError, match='attn_implementation: flash_attention_2 needs the flash_attn package'):
        build(llama, attn_implementation='flash_attention_2')


@pytest.mark.parametrize(('keys', 'match'), [
    ({'pretrained_lora_id_or_path': 'x/lora'}, "pretrained_lora_id_or_path='x/lora'"),
    ({'load_in_8bit': True}, 'load_in_8bit: true is not supported'),
    ({'init_device': 'gpu'}, "init_device='gpu' is invalid; allowed: cpu, meta, mixed"),
    ({'use_flash_atention_2': True}, 'use_flash_atention_2'),
])
def test_refused_keys(llama, keys, match) -> None:
    with pytest.raises(ConfigError, match=match):
        build(llama, **keys)


def test_keys_without_effect_warn_once_each(llama, caplog) -> None:
    keys = {'use_train_metrics': False, 'use_logits': False, 'additional_train_metrics': ['x'],
            'additional_eval_metrics': ['y'], 'allow_embedding_resizing': True}
    with caplog.at_level(logging.WARNING):
        build(llama, pretrained=False, **keys)
        build(llama, pretrained=False, **keys)
    for key in keys:
        assert caplog.text.count(f'model.{key}=') == 1, key
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build(llama, pretrained=False, use_train_metrics=True, use_logits=True)
    assert 'has no effect' not in caplog.text


# ----- init_device: meta / mixed -------------------------------------------------------------------------------
def materialised(folder: Path, **keys) -> torch.nn.Module:
    model = build(folder, **keys)
    assert all(p.is_meta for p in model.parameters())
    return parallelize(model, FSDPConfig(), mesh=None)


@pytest.mark.parametrize('init_device', ['meta', 'mixed'])
def test_meta_reads_sharded_safetensors_and_ties_weights(tmp_path: Path, init_device: str) -> None:
    folder = saved(tmp_path, GPT2, max_shard_size='20KB')
    assert (folder / 'model.safetensors.index.json').is_file()
    model = materialised(folder, init_device=init_device)
    reference = AutoModelForCausalLM.from_pretrained(folder)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.state_dict().keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    ids = torch.randint(0, VOCAB, (2, 8))
    assert torch.equal(model.eval()(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_meta_keeps_rotary_buffers(llama) -> None:
    model = materialised(llama, init_device='meta')
    reference = AutoModelForCausalLM.from_pretrained(llama)
    assert torch.equal(model.model.rotary_emb.inv_freq, reference.model.rotary_emb.inv_freq)


def test_meta_refuses_a_folder_without_safetensors(tmp_path: Path) -> None:
    folder = saved(tmp_path, LLAMA, safe_serialization=False)
    assert (folder / 'pytorch_model.bin').is_file()
    with pytest.raises(ConfigError, match='has no model.safetensors .* use init_device: cpu, or convert'):
        build(folder, init_device='meta')


def test_random_meta_init_follows_the_seed_and_init_weights(llama) -> None:
    def state(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return materialised(llama, init_device='meta', pretrained=False).state_dict()

    first, again, other = state(1), state(1), state(2)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first['model.embed_tokens.weight'], other['model.embed_tokens.weight'])
    assert torch.equal(first['model.norm.weight'], torch.ones(16))  # RMSNorm: ones, as _init_weights sets
    std = float(first['model.layers.0.mlp.up_proj.weight'].std())
    assert 0.015 < std < 0.025  # initializer_range 0.02
