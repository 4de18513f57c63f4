"""fsdp_config.state_dict_type: full writes the unsharded weights as model.safetensors beside the DCP files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from ranks import run_ranks
from safetensors.torch import load_file
from torch import nn

from llmfoundry.config.schema import FSDPConfig, TrainConfig
from llmfoundry.config.time import Timestamp
from llmfoundry.config.validation import ConfigError
from llmfoundry.train.checkpoint import CONSOLIDATED_FILE, CheckpointParts, SaveSettings, load, save


def _tiny(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _parts(model: nn.Module, batch: int = 3) -> CheckpointParts:
    return CheckpointParts(model, torch.optim.SGD(model.parameters(), lr=0.1), Timestamp(batch=batch), None, 'x: 1\n')


def _config(**fsdp: str) -> TrainConfig:
    return TrainConfig(model={}, tokenizer={}, optimizer={}, scheduler={}, train_loader={}, max_duration='1ba',
                       max_seq_len=8, global_train_batch_size=2, save_folder='/tmp/{run_name}',
                       fsdp_config=FSDPConfig(**fsdp) if fsdp else None)


def test_from_config_maps_state_dict_type() -> None:
    assert not SaveSettings.from_config(_config(), 'r').consolidated
    assert not SaveSettings.from_config(_config(state_dict_type='sharded'), 'r').consolidated
    settings = SaveSettings.from_config(_config(state_dict_type='full'), 'r')
    assert settings.consolidated and settings.save_folder == '/tmp/r'
    with pytest.raises(ConfigError, match=r"state_dict_type='local' is invalid; allowed: sharded, full"):
        SaveSettings.from_config(_config(state_dict_type='local'), 'r')


def test_full_writes_consolidated_weights_before_complete(tmp_path: Path) -> None:
    model = _tiny(0)
    path = save(SaveSettings(str(tmp_path), consolidated=True), _parts(model), rank=0, world_size=1)
    assert sorted(os.listdir(path)) == ['.complete', '.metadata', '__0_0.distcp', CONSOLIDATED_FILE]
    weights = load_file(Path(path) / CONSOLIDATED_FILE)
    assert weights.keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(weights[name], tensor), name
    fresh = _tiny(1)
    load(path, fresh, weights_only=True)  # the DCP copy is unaffected
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_sharded_default_writes_no_consolidated_file(tmp_path: Path) -> None:
    path = save(SaveSettings(str(tmp_path)), _parts(_tiny(0)), rank=0, world_size=1)
    assert CONSOLIDATED_FILE not in os.listdir(path)


def _two_rank_full(rank: int, world_size: int, root: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = _tiny(0)  # same seed on both ranks: the expected full weights are this model's
    if rank == 0:
        torch.save(model.state_dict(), f'{root}/expected.pt')
    mesh = init_device_mesh('cpu', (world_size,))
    fully_shard(model[0], mesh=mesh)
    fully_shard(model[2], mesh=mesh)
    fully_shard(model, mesh=mesh)
    save(SaveSettings(f'{root}/ckpt', consolidated=True), _parts(model, batch=5), rank=rank, world_size=world_size)


@pytest.mark.slow
def test_full_on_two_fsdp2_ranks_gathers_the_whole_model(tmp_path: Path) -> None:
    run_ranks(_two_rank_full, 2, str(tmp_path), timeout=90)
    weights = load_file(tmp_path / 'ckpt' / 'ep0-ba5' / CONSOLIDATED_FILE)
    expected = torch.load(tmp_path / 'expected.pt')
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor), name
    assert (tmp_path / 'ckpt' / 'ep0-ba5' / '.complete').is_file()
