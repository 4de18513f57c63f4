"""The converter's refusals (exit 1, one line naming the problem) and the in-memory loader's sharding."""

from __future__ import annotations

import json

import pytest

from llmfoundry.data.finetuning.memory_loader import EpochSampler
from llmfoundry.data.prep.finetuning import main


@pytest.fixture
def data(tmp_path):
    path = tmp_path / 'train.jsonl'
    path.write_text(json.dumps({'messages': [{'role': 'user', 'content': 'a'}]}) + '\n')
    return str(path)


@pytest.mark.parametrize(('flags', 'message'), [
    (['--skip-preprocessing'], "example 0: a chat needs at least 2 messages"),
    ([], '--preprocessor is not set and no preprocessor is registered'),
    (['--skip-preprocessing', '--encoder_decoder'], '--encoder_decoder'),
    (['--skip-preprocessing', '--target_prompts', 'some'], "flags.target_prompts='some'"),
    (['--preprocessor', 'nowhere:fn'], "--preprocessor='nowhere:fn' cannot be imported"),
])
def test_converter_refusals(tmp_path, data, capsys, flags, message):
    argv = ['--dataset', 'json', '--data_files', data, '--splits', 'train', '--out_root', str(tmp_path / 'out')]
    assert main(argv + flags) == 1
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1
    assert not (tmp_path / 'out' / 'train').exists()  # nothing half-written


@pytest.mark.parametrize(('shuffle', 'drop_last', 'expected'), [
    (False, False, [[0, 2, 4], [1, 3, 0]]),  # padded by repeating the start: equal rows per rank
    (False, True, [[0, 2], [1, 3]]),
])
def test_epoch_sampler_shards_ranks(monkeypatch, shuffle, drop_last, expected):
    found = []
    for rank in (0, 1):
        monkeypatch.setenv('RANK', str(rank))
        monkeypatch.setenv('WORLD_SIZE', '2')
        monkeypatch.setenv('LOCAL_RANK', str(rank))
        monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')
        found.append(list(EpochSampler(5, shuffle, 0, drop_last)))
    assert found == expected
