"""Config errors say what to do: short "did you mean" lists, and features not built yet never read like typos."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfoundry.config.loading import load_train_config
from llmfoundry.config.not_built import NOT_BUILT, without_unset
from llmfoundry.config.validation import ConfigError, unknown_key_error

REPO = Path(__file__).resolve().parents[2]
TINY_YAML = REPO / 'yamls' / 'pretrain' / 'mpt-tiny-cpu.yaml'


def error_of(*overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_train_config(TINY_YAML, list(overrides))
    return str(caught.value)


@pytest.mark.parametrize(('override', 'expected'), [
    ('save_intervall=10ba', "unknown key 'save_intervall'; did you mean 'save_interval'?"),
    ('device_batch_size=4',
     "unknown key 'device_batch_size'; did you mean 'device_eval_batch_size' or 'device_train_batch_size'?"),
    ('fsdp_config.sharding_stratgy=FULL_SHARD',
     "unknown key 'fsdp_config.sharding_stratgy'; did you mean 'fsdp_config.sharding_strategy'?"),
])
def test_unknown_key_shows_close_matches_not_every_key(override, expected):
    message = error_of(override)
    assert message == expected
    assert 'accepted' not in message and 'autoresume' not in message  # no list of every top-level key


def test_unknown_key_like_nothing_points_at_the_reference_and_variables():
    assert error_of('data_local=/x') == (
        "unknown key 'data_local'. Every key is listed in docs/CONFIG_REFERENCE.md. "
        'Free variables for interpolation belong under `variables:`.')


def test_a_short_section_still_lists_its_keys():
    message = str(unknown_key_error('lrr', ['betas', 'lr', 'name'], 'optimizer'))
    assert message == "unknown key 'optimizer.lrr'; did you mean 'optimizer.lr'? (accepted: betas, lr, name)."


def test_at_most_three_suggestions():
    allowed = [f'key_{i}' for i in range(20)]
    message = str(unknown_key_error('key_', allowed, 'section'))
    assert message.count("'section.key_") == 3 + 1  # the unknown key itself and three suggestions


NOT_BUILT_CASES = [
    ('icl_max_seq_len=1024', "icl_max_seq_len is not supported yet: the ICL tasks' length is icl_seq_len (default: "
                             'max_seq_len); use that instead, or remove it (or set it to null).'),
    ('icl_seq_len_buffer=1', "icl_seq_len_buffer is not supported yet: the ICL tasks' length is icl_seq_len"),
    ('models=[{model_name: mpt}]', 'this looks like an llm-foundry evaluation YAML (it lists `models:`): run it with '
                                   '`llmfoundry eval`; `llmfoundry train` needs a training YAML'),
]


@pytest.mark.parametrize(('override', 'expected'), NOT_BUILT_CASES, ids=[c[0].split('=')[0] for c in NOT_BUILT_CASES])
def test_features_not_built_yet_say_so(override, expected):
    message = error_of(override)
    assert message.startswith(expected)
    assert 'did you mean' not in message and 'unknown key' not in message


def test_an_evaluation_yaml_is_recognised_before_its_missing_training_keys(tmp_path):
    path = tmp_path / 'eval.yaml'
    path.write_text('max_seq_len: 1024\nmodels:\n- model_name: mpt-7b\n  model: {name: mpt_causal_lm}\n'
                    'icl_tasks: eval/yamls/tasks.yaml\n')
    with pytest.raises(ConfigError, match='this looks like an llm-foundry evaluation YAML'):
        load_train_config(path)


def test_unset_keys_of_features_not_built_are_accepted_and_dropped():
    load_train_config(TINY_YAML, ['icl_tasks=null', 'eval_gauntlet=null', 'profiler=null', 'tp_config=null'])
    raw = {'tp_config': None, 'icl_seq_len_buffer': None, 'seed': 1}
    assert without_unset(raw) == {'seed': 1}
    assert raw == {'tp_config': None, 'icl_seq_len_buffer': None, 'seed': 1}  # the caller's mapping is left alone


def test_every_not_built_message_names_its_key_or_the_eval_yaml():
    for path, message in NOT_BUILT.items():
        assert message.startswith(f'{path} is not supported yet') or 'evaluation YAML' in message
