"""The pretraining YAMLs: llm-foundry's layout, the released MPT architecture, the published sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from llmfoundry.config.loading import load_train_config
from llmfoundry.models.accounting import count_parameters
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

REPO = Path(__file__).resolve().parents[2]
YAMLS = REPO / 'yamls' / 'pretrain'
REFERENCE_YAML = Path(__file__).resolve().parents[1] / 'fixtures' / 'llmfoundry-yamls' / 'mpt-7b.yaml'

# size: (d_model, n_heads, n_layers, exact parameter count with vocab 50432)
SIZES = {
    '125m': (768, 12, 12, 123_685_632),
    '350m': (1024, 16, 24, 353_682_432),
    '760m': (1536, 12, 24, 757_016_064),
    '1b': (2048, 16, 24, 1_311_344_640),
    '3b': (2560, 20, 32, 2_645_854_720),
    '7b': (4096, 32, 32, 6_649_286_656),  # the released mosaicml/mpt-7b
    '13b': (5120, 40, 40, 12_841_538_560),
    '30b': (7168, 56, 48, 29_957_200_896),
    '70b': (8192, 64, 80, 64_838_967_296),  # 12 * 80 * 8192^2 + embeddings: MHA with a 4x MLP, not Llama-2-70B's shape
}
TOP_LEVEL_KEYS = {
    'variables', 'max_seq_len', 'run_name', 'model', 'tokenizer', 'train_loader', 'eval_loader', 'scheduler',
    'optimizer', 'algorithms', 'max_duration', 'eval_interval', 'eval_first', 'eval_subset_num_batches',
    'global_train_batch_size', 'seed', 'device_eval_batch_size', 'device_train_microbatch_size', 'precision',
    'fsdp_config', 'progress_bar', 'log_to_console', 'console_log_interval', 'callbacks',
}


RELEASED_ARCHITECTURE_KEYS = {'model.no_bias', 'model.attn_config.alibi'}


def _reference() -> dict:
    return OmegaConf.to_container(OmegaConf.load(REFERENCE_YAML), resolve=True)


def _key_paths(cfg: dict, prefix: str = '') -> set[str]:
    paths = set()
    for key, value in cfg.items():
        paths.add(prefix + key)
        if isinstance(value, dict):
            paths |= _key_paths(value, f'{prefix}{key}.')
    return paths


def _load(size: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(YAMLS / f'mpt-{size}.yaml'), resolve=True)


def _config(size: str) -> MPTConfig:
    model = dict(_load(size)['model'])
    assert model.pop('name') == 'mpt_causal_lm'
    return MPTConfig(**model)


def test_every_published_size_has_a_yaml() -> None:
    assert {f'mpt-{s}' for s in SIZES} <= {p.stem for p in YAMLS.glob('*.yaml')}  # other (e.g. test) YAMLs may exist


@pytest.mark.parametrize('size', SIZES)
def test_layout_matches_llm_foundry(size: str) -> None:
    cfg = _load(size)
    assert set(cfg) == TOP_LEVEL_KEYS == set(_reference())
    # the same nested keys as llm-foundry's file, plus the two that select the released architecture
    assert _key_paths(cfg) - _key_paths(_reference()) == RELEASED_ARCHITECTURE_KEYS
    assert _key_paths(_reference()) <= _key_paths(cfg)
    assert cfg['tokenizer'] == {'name': 'EleutherAI/gpt-neox-20b', 'kwargs': {'model_max_length': 2048}}
    for loader in ('train_loader', 'eval_loader'):
        assert cfg[loader]['dataset']['max_seq_len'] == cfg['max_seq_len'] == 2048
    assert cfg['seed'] == cfg['variables']['global_seed']
    assert cfg['precision'] == 'amp_bf16'
    assert cfg['global_train_batch_size'] % cfg['device_train_microbatch_size'] == 0


def test_7b_yaml_is_llm_foundrys_with_the_released_architecture() -> None:
    ours, reference = _load('7b'), _reference()
    ours_model, reference_model = ours.pop('model'), reference.pop('model')
    assert ours == reference
    assert ours_model.pop('no_bias') is True and ours_model['attn_config'].pop('alibi') is True
    assert ours_model.pop('vocab_size') == 50432 and reference_model.pop('vocab_size') == 50368  # padded to 128s
    assert ours_model == reference_model


@pytest.mark.parametrize('size', SIZES)
def test_trainer_accepts_the_yaml(size: str) -> None:
    config, _ = load_train_config(YAMLS / f'mpt-{size}.yaml')
    assert config.global_train_batch_size == _load(size)['global_train_batch_size']


@pytest.mark.parametrize('size', SIZES)
def test_model_section_is_released_mpt_architecture(size: str) -> None:
    d_model, n_heads, n_layers, n_params = SIZES[size]
    config = _config(size)
    assert (config.d_model, config.n_heads, config.n_layers) == (d_model, n_heads, n_layers)
    assert (config.vocab_size, config.max_seq_len, config.expansion_ratio) == (50432, 2048, 4)
    assert config.no_bias and config.attn_config['alibi'] and not config.learned_pos_emb
    assert config.attn_config['attn_impl'] == 'flash' and config.init_device == 'meta'
    assert config.norm_type == 'low_precision_layernorm' and config.tie_word_embeddings
    assert count_parameters(config) == n_params


@pytest.mark.parametrize('size', SIZES)
def test_max_duration_is_about_20_tokens_per_parameter(size: str) -> None:
    cfg = _load(size)
    batches = int(cfg['max_duration'].removesuffix('ba'))
    tokens = batches * cfg['global_train_batch_size'] * cfg['max_seq_len']
    assert 20.0 <= tokens / SIZES[size][3] < 20.4


@pytest.mark.parametrize('size', ['125m', '7b', '70b'])
def test_model_builds_on_meta_with_the_counted_parameters(size: str) -> None:
    model = MPTForCausalLM(_config(size))
    params = list(model.parameters())
    assert all(p.device == torch.device('meta') for p in params)
    assert sum(p.numel() for p in params) == SIZES[size][3] == count_parameters(model)


FINETUNE = REPO / 'yamls' / 'finetune'
# recipe -> (its CPU twin, attention settings it adds to the released architecture)
RECIPES = {
    'mpt-7b-instruct': ('mpt-tiny-instruct-cpu', {'attn_impl': 'flash', 'attn_uses_sequence_id': True}),
    'mpt-7b-chat': ('mpt-tiny-chat-cpu', {'attn_impl': 'flash', 'attn_uses_sequence_id': True}),
    'mpt-7b-storywriter': ('mpt-tiny-storywriter-cpu', {'attn_impl': 'flex'}),
}
ARCHITECTURE = ('d_model', 'n_heads', 'n_layers', 'expansion_ratio', 'vocab_size', 'no_bias')


def _finetune(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(FINETUNE / f'{name}.yaml'), resolve=True)


@pytest.mark.parametrize('recipe', RECIPES)
def test_finetuning_recipes_start_from_mpt_7b_and_their_twins_from_the_tiny_pretraining_model(recipe: str) -> None:
    """The recipe loads MPT-7B's weights (the pretraining YAML's architecture); its twin has the same sections and
    the tiny CPU model's architecture, so the tiny pretraining run's checkpoint (the quickstart's) loads into it."""
    cfg, (twin_name, attn) = _finetune(recipe), RECIPES[recipe]
    twin, pretrain_7b, pretrain_tiny = _finetune(twin_name), _load('7b')['model'], _load('tiny-cpu')['model']
    assert {k: cfg['model'][k] for k in ARCHITECTURE} == {k: pretrain_7b[k] for k in ARCHITECTURE}
    assert cfg['model']['attn_config'] == {'alibi': True, **attn}
    assert cfg['load_path'] == './mpt-7b-checkpoint' and cfg['load_weights_only'] is True
    assert {k: twin['model'][k] for k in ARCHITECTURE} == {k: pretrain_tiny[k] for k in ARCHITECTURE}
    assert twin['model']['attn_config']['alibi'] is True
    assert twin['train_loader']['name'] == cfg['train_loader']['name']
    assert set(twin['train_loader']['dataset']) >= set(cfg['train_loader']['dataset']) - {'hf_kwargs'}
    assert twin['load_weights_only'] is True


def test_storywriter_recipe_trains_at_65k_on_8_gpus_with_one_sequence_each() -> None:
    cfg = _finetune('mpt-7b-storywriter')
    assert cfg['max_seq_len'] == cfg['model']['max_seq_len'] == cfg['train_loader']['dataset']['max_seq_len'] == 65536
    assert cfg['global_train_batch_size'] == 8 and cfg['device_train_microbatch_size'] == 1
    assert cfg['fsdp_config']['sharding_strategy'] == 'FULL_SHARD' and cfg['fsdp_config']['activation_checkpointing']
