"""Training YAMLs: llm-foundry's files validate unchanged; mistakes are named with their fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfoundry.config.loading import load_train_config
from llmfoundry.config.schema import FSDPConfig
from llmfoundry.config.validation import ConfigError

REFERENCE_YAMLS = Path(__file__).resolve().parents[1] / 'fixtures' / 'llmfoundry-yamls'  # our copies of user files


@pytest.mark.parametrize('name', ['mpt-125m.yaml', 'mpt-7b.yaml'])
def test_reference_llm_foundry_yamls_validate_unchanged(name):
    config, resolved = load_train_config(REFERENCE_YAMLS / name, ['variables.data_local=/data/c4', 'model.n_layers=2'])
    assert config.seed == 17 and config.precision == 'amp_bf16' and config.max_seq_len == 2048
    assert config.model['max_seq_len'] == 2048 and config.model['n_layers'] == 2
    assert config.train_loader['dataset']['local'] == '/data/c4'
    assert config.train_loader['dataset']['shuffle_seed'] == 17
    assert isinstance(config.fsdp_config, FSDPConfig) and config.fsdp_config.sharding_strategy == 'FULL_SHARD'
    assert config.callbacks['speed_monitor'] == {'window_size': 10}
    assert 'variables' not in resolved and resolved['model']['name'] == 'mpt_causal_lm'


def write(tmp_path: Path, text: str) -> Path:
    base = (REFERENCE_YAMLS / 'mpt-125m.yaml').read_text()
    path = tmp_path / 'run.yaml'
    path.write_text(base + text)
    return path


@pytest.mark.parametrize(
    ('extra', 'overrides', 'message'),
    [
        ('max_duraton: 10ba\n', [], "unknown key 'max_duraton'; did you mean 'max_duration'?"),
        ('data_local: /x\n', [], 'Free variables for interpolation belong under `variables:`'),
        ('', ['fsdp_config.sharding_stratgy=FULL_SHARD'],
         "unknown key 'fsdp_config.sharding_stratgy'; did you mean 'fsdp_config.sharding_strategy'?"),
        ('', ['max_duration=10 batches'], "max_duration='10 batches' is not a time string"),
        ('', ['eval_interval=1.5ep'], "'ep' counts whole units"),
        ('', ['precision=bf16'], "precision='bf16' is invalid; allowed: fp32, amp_bf16, amp_fp16"),
        ('', ['seed=abc'], "'seed'='abc' has the wrong type; expected an integer"),
        ('', ['device_train_microbatch_size=0'], 'device_train_microbatch_size=0 is invalid'),
        ('', ['autoresume=true'], 'autoresume: true needs a run_name'),
        ('', ['model=null'], "'model'=None has the wrong type; expected a mapping"),
        ('', ['max_seq_len=${variables.nope}'], 'nope'),
    ],
)
def test_config_mistakes_name_the_key(tmp_path, extra, overrides, message):
    with pytest.raises(ConfigError, match=message.replace('(', r'\(').replace('?', r'\?').replace('$', r'\$')):
        load_train_config(write(tmp_path, extra), overrides)


def test_missing_required_key(tmp_path):
    path = tmp_path / 'run.yaml'
    path.write_text('model: {name: mpt_causal_lm}\n')
    with pytest.raises(ConfigError, match="Missing required config key 'tokenizer'"):
        load_train_config(path)


@pytest.mark.parametrize(('override', 'message'), [
    ('save_latest_filename=latest-{run_name}', "the pointer to the newest checkpoint is always 'latest'"),
    ('tp_config={tensor_parallel_degree: 2}', 'tp_config is not supported yet'),
])
def test_keys_we_do_not_honour_are_refused(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(write(tmp_path, ''), [override])
