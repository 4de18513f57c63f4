"""`llmfoundry convert to-hf` from training checkpoints: ours (stored config) and Composer's (--config)."""

from __future__ import annotations

from pathlib import Path

import torch
from export_helpers import MPT_BASE, TOL, input_ids, load_hf, logits, max_diff, tiny_model
from omegaconf import OmegaConf

from llmfoundry.cli import main as cli
from llmfoundry.config.time import Timestamp
from llmfoundry.train.checkpoint import CheckpointParts, SaveSettings, save

MODEL_SECTION = {'name': 'mpt_causal_lm', 'init_device': 'meta', **MPT_BASE}


def _config_yaml() -> str:
    return OmegaConf.to_yaml(OmegaConf.create({'seed': 3, 'max_seq_len': 64, 'model': MODEL_SECTION}))


def test_to_hf_from_our_checkpoint_uses_the_stored_config(tmp_path: Path) -> None:
    ours = tiny_model(MPT_BASE, seed=4)
    parts = CheckpointParts(ours, torch.optim.AdamW(ours.parameters()), Timestamp(batch=2), None, _config_yaml())
    path = save(SaveSettings(str(tmp_path / 'ckpt')), parts, rank=0, world_size=1)

    assert cli(['convert', 'to-hf', path, str(tmp_path / 'hf')]) == 0
    theirs = load_hf(tmp_path / 'hf', 'MptForCausalLM')
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(theirs, ids)) <= TOL


def test_composer_checkpoint_needs_config(tmp_path: Path, capsys) -> None:
    ours = tiny_model(MPT_BASE, seed=5)
    pt = tmp_path / 'ep0-ba2-rank0.pt'
    torch.save({'state': {'model': {f'model.{k}': v for k, v in ours.state_dict().items()}}}, pt)

    assert cli(['convert', 'to-hf', str(pt), str(tmp_path / 'hf')]) == 1
    assert 'Composer checkpoint' in capsys.readouterr().err and not (tmp_path / 'hf').exists()

    (tmp_path / 'train.yaml').write_text(_config_yaml())
    argv = ['convert', 'to-hf', str(pt), str(tmp_path / 'hf'), '--config', str(tmp_path / 'train.yaml'),
            '--dtype', 'float32']
    assert cli(argv) == 0
    ids = input_ids(seed=1)
    assert max_diff(logits(ours, ids), logits(load_hf(tmp_path / 'hf', 'MptForCausalLM'), ids)) <= TOL


def test_checkpoint_without_stored_config_asks_for_one(tmp_path: Path, capsys) -> None:
    ours = tiny_model(MPT_BASE)
    path = save(SaveSettings(str(tmp_path / 'ckpt'), weights_only=True), CheckpointParts(ours), rank=0, world_size=1)
    assert cli(['convert', 'to-hf', path, str(tmp_path / 'hf')]) == 1
    assert 'saved without its training config; pass the training YAML with --config' in capsys.readouterr().err


def test_to_hf_from_a_run_folder_follows_latest(tmp_path: Path, capsys) -> None:
    run = tmp_path / 'run'
    for batch, seed in ((2, 6), (4, 7)):
        ours = tiny_model(MPT_BASE, seed=seed)
        parts = CheckpointParts(ours, torch.optim.AdamW(ours.parameters()), Timestamp(batch=batch), None,
                                _config_yaml())
        newest = save(SaveSettings(str(run)), parts, rank=0, world_size=1)
    assert (run / 'latest').read_text().strip() == 'ep0-ba4'

    assert cli(['convert', 'to-hf', str(run), str(tmp_path / 'hf')]) == 0
    assert newest in capsys.readouterr().out
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(load_hf(tmp_path / 'hf', 'MptForCausalLM'), ids)) <= TOL


def test_to_hf_from_a_run_folder_without_a_complete_checkpoint(tmp_path: Path, capsys) -> None:
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'latest').write_text('ep0-ba2')
    assert cli(['convert', 'to-hf', str(tmp_path / 'run'), str(tmp_path / 'hf')]) == 1
    assert 'none of its checkpoints is complete' in capsys.readouterr().err
    assert not (tmp_path / 'hf').exists()
