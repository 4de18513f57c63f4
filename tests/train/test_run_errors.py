"""A run that cannot start says why in one line (exit code 2), before it builds a model or writes anything."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from ranks import run_ranks
from test_train_e2e import TINY_YAML

from llmfoundry.config.time import Timestamp
from llmfoundry.config.validation import ConfigError
from llmfoundry.data.text_loader import check_local_data
from llmfoundry.train import checkpoint
from llmfoundry.train.checkpoint.checkpointer import newest_complete
from llmfoundry.train.checkpoint.resume import check_load_path, resolve_load_path
from llmfoundry.train.distributed import DistInfo, agree_on_errors
from llmfoundry.train.entry import main as train
from llmfoundry.train.preflight import check_writable, load_tokenizer

ACCEPTED_FORMATS = ('Accepted: a checkpoint folder we saved (e.g. SAVE_FOLDER/ep0-ba500), a save_folder with a '
                    '`latest` file (its newest checkpoint), SAVE_FOLDER/latest-rank{rank}.pt')


def run(capsys, tokenizer_dir: str, data: Path | str, save_folder: Path, *extra: str) -> tuple[int, list[str]]:
    """Train the tiny YAML in-process; (exit code, the lines printed to stderr)."""
    code = train([str(TINY_YAML), f'variables.data_local={data}', f'variables.tokenizer={tokenizer_dir}',
                  f'save_folder={save_folder}', *extra])
    return code, capsys.readouterr().err.strip().splitlines()


def test_missing_data_folder_names_the_key_the_path_and_the_data_prep_command(capsys, tokenizer_dir, tmp_path,
                                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    building = []
    monkeypatch.setattr('llmfoundry.train.setup.build_model', lambda section: building.append(section))
    code, lines = run(capsys, tokenizer_dir, './no-such-mds', tmp_path / 'run')
    assert code == 2 and len(lines) == 1
    assert lines[0] == (
        "Config error: train_loader.dataset.local='./no-such-mds' does not exist and train_loader.dataset.remote is "
        'not set; create the shards with: llmfoundry data-prep convert_text_to_mds --input_folder YOUR_TEXT_FOLDER '
        f'--output_folder ./no-such-mds/train --concat_tokens 256 --tokenizer {tokenizer_dir} '
        "--eos_text '<|endoftext|>'")
    assert not building and not (tmp_path / 'run').exists()  # no model built, nothing written


def test_missing_eval_split_is_named(capsys, tokenizer_dir, mds_dir, tmp_path):
    data = tmp_path / 'mds'
    shutil.copytree(mds_dir / 'train', data / 'train')
    code, lines = run(capsys, tokenizer_dir, data, tmp_path / 'run')
    assert code == 2
    assert lines[-1].startswith(f"Config error: eval_loader.dataset.local='{data}' has no val/index.json and "
                                'eval_loader.dataset.remote is not set; create the shards with: llmfoundry data-prep')
    assert f'--output_folder {data}/val ' in lines[-1]


def test_streams_are_checked_and_a_remote_makes_local_a_cache(tmp_path):
    loader = {'name': 'text', 'dataset': {'max_seq_len': 64, 'split': 'train', 'streams': {
        'web': {'remote': 's3://bucket/web', 'local': str(tmp_path / 'cache')},
        'code': {'local': str(tmp_path / 'code')},
    }}}
    with pytest.raises(ConfigError, match=r"^train_loader\.dataset\.streams\.code\.local='.*/code' does not exist and "
                                          r'train_loader\.dataset\.streams\.code\.remote is not set'):
        check_local_data(loader, 'train_loader', 'my-tokenizer')
    del loader['dataset']['streams']['code']
    check_local_data(loader, 'train_loader')  # only a remote: nothing to check locally


def test_random_bytes_as_load_path_are_not_a_checkpoint_and_nothing_is_written(capsys, tokenizer_dir, mds_dir,
                                                                              tmp_path):
    junk = tmp_path / 'model.pt'
    junk.write_bytes(bytes(range(7, 250)) * 40)
    code, lines = run(capsys, tokenizer_dir, mds_dir, tmp_path / 'run', f'load_path={junk}')
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"Config error: load_path='{junk}': {junk} is not a checkpoint we can read (a .pt file "
                               'that torch.save did not write: neither a zip archive nor a pickle). ')
    assert ACCEPTED_FORMATS in lines[0] and 'a Composer checkpoint (a .pt file or a sharded folder' in lines[0]
    assert not (tmp_path / 'run').exists()  # no run folder, config.yaml or metrics.jsonl


def test_load_path_to_a_folder_that_does_not_exist_says_so(capsys, tokenizer_dir, mds_dir, tmp_path):
    code, lines = run(capsys, tokenizer_dir, mds_dir, tmp_path / 'run', f'load_path={tmp_path}/nope')
    assert (code, lines) == (2, [f"Config error: load_path='{tmp_path}/nope': {tmp_path}/nope does not exist."])


@pytest.mark.parametrize(('make', 'why'), [
    (lambda p: p.mkdir(), 'a folder without .metadata'),
    (lambda p: p.write_text('weights'), 'a file, and the only checkpoint file read is a Composer .pt'),
], ids=['empty-folder', 'not-a-pt-file'])
def test_other_paths_are_not_checkpoints(tmp_path, make, why):
    path = tmp_path / 'thing'
    make(path)
    with pytest.raises(ConfigError, match=f"^load_path='{path}': {path} is not a checkpoint we can read \\({why}\\)"):
        check_load_path(str(path), 'run')


def test_a_save_folder_as_load_path_means_its_newest_checkpoint(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    folder = tmp_path / 'run7'
    for batch in (2, 4):
        checkpoint.save(checkpoint.SaveSettings(str(folder)), checkpoint.CheckpointParts(
            model, optimizer, Timestamp(batch=batch), {}, ''), rank=0, world_size=1)
    newest = str(folder / 'ep0-ba4')
    assert resolve_load_path(f'{tmp_path}/{{run_name}}', 'run7', newest_complete) == newest
    assert resolve_load_path(str(folder / 'ep0-ba2'), 'run7', newest_complete) == str(folder / 'ep0-ba2')
    check_load_path(str(folder), 'run7')
    check_load_path(f'{folder}/latest-rank{{rank}}.pt', 'run7')
    (folder / 'ep0-ba4' / '.complete').unlink()
    with pytest.raises(ConfigError, match='ep0-ba4 cannot be loaded: .complete is missing'):
        check_load_path(str(folder / 'ep0-ba4'), 'run7')


def test_run_folder_must_be_writable(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    with pytest.raises(ConfigError, match=f"^save_folder='{blocker}/run': {blocker} is a file, not a folder."):
        check_writable(blocker / 'run', 'save_folder')
    check_writable(tmp_path / 'new' / 'run', 'save_folder')
    assert not (tmp_path / 'new').exists()  # checked, not created


def test_a_missing_tokenizer_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=f"^tokenizer.name='{tmp_path}/tok': tokenizer folder .* does not exist"):
        load_tokenizer({'name': f'{tmp_path}/tok'})
    with pytest.raises(ConfigError, match="unknown key 'tokenizer.kwarg'; did you mean 'tokenizer.kwargs'"):
        load_tokenizer({'name': 'x', 'kwarg': {}})


def _fails_on(failing: tuple[int, ...], message: str):
    def check() -> int:
        if int(torch.distributed.get_rank()) in failing:
            raise ConfigError(message)
        return 7
    return check


def _agree(rank: int, world_size: int) -> None:
    info = DistInfo(rank, world_size, rank, torch.device('cpu'))
    assert agree_on_errors(_fails_on((), 'x'), info) == 7
    for failing, expected in (((0, 1), 'same on all'), ((1,), 'only one (rank 1)')):
        with pytest.raises(ConfigError) as caught:
            agree_on_errors(_fails_on(failing, expected.split(' (')[0]), info)
        assert str(caught.value) == expected  # every rank raises, with the failing ranks named unless all failed


@pytest.mark.slow
def test_a_check_that_fails_on_one_rank_fails_on_every_rank():
    run_ranks(_agree, 2)
