"""Checkpoints: round trip, resharding 2->1 and 1->2, interrupted saves, keep-N / overwrite, S3, Composer migration."""

from __future__ import annotations

import os
import pickle
import random
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from ranks import run_ranks
from s3_server import TEST_BUCKET
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

from llmfoundry.config.time import Timestamp
from llmfoundry.train.checkpoint import (
    CheckpointError,
    CheckpointParts,
    SaveSettings,
    composer,
    find_latest,
    layout,
    load,
    save,
)

# ----- helpers -------------------------------------------------------------------------------------------------


class Tiny(nn.Module):
    def __init__(self, extra: bool = False) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.out = nn.Linear(8, 3)
        if extra:
            self.more = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.inp(x)))


def _trained(seed: int, steps: int = 2) -> tuple[Tiny, torch.optim.AdamW]:
    torch.manual_seed(seed)
    model = Tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _steps(model, optimizer, steps)
    return model, optimizer


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    data = torch.Generator().manual_seed(123)
    for _ in range(steps):
        model(torch.randn(5, 4, generator=data)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()


def _full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Unsharded model + optimizer state keyed by parameter name, comparable across world sizes."""
    model_sd, optim_sd = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    return {'model': {k: v.clone() for k, v in model_sd.items()},
            'optim': {name: {k: v.clone() for k, v in per.items()} for name, per in optim_sd['state'].items()}}


def _assert_equal_states(actual: dict, expected: dict) -> None:
    assert actual['model'].keys() == expected['model'].keys()
    for key, value in expected['model'].items():
        assert torch.equal(actual['model'][key], value), key
    assert actual['optim'].keys() == expected['optim'].keys()
    for name, per in expected['optim'].items():
        for key, value in per.items():
            assert torch.equal(actual['optim'][name][key], value), (name, key)


def _draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def _save(folder: Path | str, batch: int, model: nn.Module, optimizer: torch.optim.Optimizer, **settings) -> str:
    parts = CheckpointParts(model, optimizer, Timestamp(batch=batch, sample=4 * batch), {'sample_in_epoch': 4 * batch},
                            'seed: 17\n')
    return save(SaveSettings(str(folder), **settings), parts, rank=0, world_size=1)


# ----- one rank ------------------------------------------------------------------------------------------------


def test_round_trip_restores_weights_optimizer_timestamp_loader_rng(tmp_path: Path) -> None:
    model, optimizer = _trained(seed=0)
    expected = _full_state(model, optimizer)
    path = _save(tmp_path, 7, model, optimizer)
    after_save = _draws()
    assert Path(path).name == 'ep0-ba7'
    assert sorted(os.listdir(path)) == ['.complete', '.metadata', '__0_0.distcp']
    assert (tmp_path / 'latest').read_text() == 'ep0-ba7'

    fresh, fresh_optimizer = _trained(seed=1, steps=1)
    torch.manual_seed(999)
    restored = load(find_latest(str(tmp_path)), fresh, fresh_optimizer)
    _assert_equal_states(_full_state(fresh, fresh_optimizer), expected)
    assert restored.timestamp == Timestamp(batch=7, sample=28)
    assert restored.loader_state == {'sample_in_epoch': 28}
    assert restored.config_text == 'seed: 17\n'
    assert restored.saved_world_size == 1
    restored.restore_rng(seed=17, rank=0)
    assert _draws() == after_save

    weights_only = load(path, Tiny(), weights_only=True)
    assert weights_only.timestamp is None and weights_only.rng is None


def test_save_weights_only_holds_the_model_alone(tmp_path: Path) -> None:
    model, optimizer = _trained(seed=0)
    path = _save(tmp_path, 1, model, optimizer, weights_only=True)
    keys = set(layout.read_metadata(path).state_dict_metadata)
    assert keys and all(key.startswith('model.') for key in keys)
    with pytest.raises(CheckpointError, match='weights only'):
        load(path, Tiny(), torch.optim.AdamW(Tiny().parameters()))
    fresh = Tiny()
    load(path, fresh, weights_only=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_strict_model_weights(tmp_path: Path) -> None:
    model, optimizer = _trained(seed=0)
    path = _save(tmp_path, 1, model, optimizer)
    with pytest.raises(CheckpointError, match='more'):
        load(path, Tiny(extra=True), weights_only=True)
    bigger = Tiny(extra=True)
    load(path, bigger, weights_only=True, strict=False)
    assert torch.equal(bigger.inp.weight, model.inp.weight)


def _missing_shard(path: str) -> None:
    os.remove(os.path.join(path, '__0_0.distcp'))


def _truncated_metadata(path: str) -> None:
    metadata = Path(path, '.metadata')
    metadata.write_bytes(metadata.read_bytes()[:40])


def _no_complete(path: str) -> None:
    os.remove(os.path.join(path, '.complete'))


@pytest.mark.parametrize(('damage', 'reason'), [
    (_missing_shard, r'data file __0_0\.distcp is missing'),
    (_truncated_metadata, r'\.metadata cannot be read'),
    (_no_complete, r'\.complete is missing'),
])  # fmt: skip
def test_interrupted_save_is_skipped_by_autoresume_and_refused_by_load(tmp_path: Path, damage, reason: str) -> None:
    model, optimizer = _trained(seed=0)
    good = _save(tmp_path, 1, model, optimizer)
    bad = _save(tmp_path, 2, model, optimizer)
    damage(bad)
    with pytest.warns(UserWarning, match='skipping .*ep0-ba2'):
        assert find_latest(str(tmp_path)) == good
    with pytest.raises(CheckpointError, match=f'ep0-ba2 cannot be loaded: .*{reason}'):
        load(bad, Tiny(), weights_only=True)


def test_find_latest_without_checkpoints(tmp_path: Path) -> None:
    assert find_latest(str(tmp_path / 'nothing-yet')) is None


def test_keep_n_deletes_the_oldest_complete_checkpoints(tmp_path: Path) -> None:
    model, optimizer = _trained(seed=0, steps=1)
    for batch in range(1, 5):
        _save(tmp_path, batch, model, optimizer, num_to_keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ep0-ba3', 'ep0-ba4', 'latest']
    with pytest.raises(CheckpointError, match='save_num_checkpoints_to_keep=0'):
        SaveSettings(str(tmp_path), num_to_keep=0)


def test_overwrite_rules(tmp_path: Path) -> None:
    model, optimizer = _trained(seed=0, steps=1)
    path = _save(tmp_path, 1, model, optimizer)
    with pytest.raises(CheckpointError, match='already exists; set save_overwrite'):
        _save(tmp_path, 1, model, optimizer)
    _steps(model, optimizer, 1)
    _save(tmp_path, 1, model, optimizer, overwrite=True)
    fresh = Tiny()
    load(path, fresh, weights_only=True)
    assert torch.equal(fresh.inp.weight, model.inp.weight)
    # leftovers of an interrupted save at the same step are replaced without save_overwrite
    _no_complete(path)
    _save(tmp_path, 1, model, optimizer)
    assert layout.read_marker(path) is not None


def test_folder_names_from_save_filename() -> None:
    ts = Timestamp(epoch=2, batch=30, sample=120)
    assert layout.folder_name('ep{epoch}-ba{batch}-rank{rank}.pt', ts) == 'ep2-ba30'
    assert layout.folder_name('{run_name}-sp{sample}', ts, run_name='r1') == 'r1-sp120'
    with pytest.raises(CheckpointError, match='cannot contain {rank}'):
        layout.folder_name('rank{rank}-ba{batch}', ts)
    with pytest.raises(CheckpointError, match='unknown placeholder'):
        layout.folder_name('ba{step}', ts)
    assert layout.resolve_folder('s3://b/{run_name}/ckpt', 'r1') == 's3://b/r1/ckpt'


# ----- Composer migration --------------------------------------------------------------------------------------


def _composer_layout(model: nn.Module) -> dict:
    """What llm-foundry's Composer trainer saves in a monolithic .pt (abridged, same nesting and types)."""
    return {
        'state': {
            'model': {f'model.{k}': v for k, v in model.state_dict().items()},
            'optimizers': {'DecoupledAdamW': {'state': {}, 'param_groups': [{'lr': 1e-3, 'params': [0, 1]}]}},
            'timestamp': {'epoch': 0, 'batch': 10, 'sample': 40, 'token': 4096},
            'run_name': 'composer-run',
            'integrations': {'huggingface': {'model': {'config': {'d_model': 8}}}},
        },
        'rng': [{'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}],
    }


def test_composer_monolithic_pt_loads_as_weights(tmp_path: Path) -> None:
    source, _ = _trained(seed=3, steps=0)
    path = str(tmp_path / 'ep0-ba10-rank0.pt')
    torch.save(_composer_layout(source), path)
    assert sorted(composer.read_model_weights(path)) == sorted(source.state_dict())
    target = Tiny()
    with pytest.warns(UserWarning, match='only the model weights'):
        restored = load(path, target, torch.optim.AdamW(target.parameters()))
    assert restored.timestamp is None
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))


class _Payload:
    def __reduce__(self):
        return (os.system, ('echo pwned > /dev/null',))


class _Custom:
    pass


@pytest.mark.parametrize(('obj', 'protocol', 'named'), [
    (_Payload(), 2, 'posix.system'),
    (_Custom(), 2, 'test_checkpoint._Custom'),
    (_Payload(), pickle.HIGHEST_PROTOCOL, 'restricted unpickler rejects it'),
], ids=['reduce-os-system', 'custom-class', 'protocol-5'])  # fmt: skip
def test_restricted_unpickler_refuses_other_classes(tmp_path: Path, obj: object, protocol: int, named: str) -> None:
    path = str(tmp_path / 'bad.pt')
    state = _composer_layout(Tiny())
    state['state']['callbacks'] = obj
    torch.save(state, path, pickle_protocol=protocol)
    with pytest.raises(CheckpointError, match=f'refusing to unpickle .*{named}'):
        load(path, Tiny(), weights_only=True)


def test_composer_sharded_folder_loads_as_weights(tmp_path: Path) -> None:
    source, _ = _trained(seed=4, steps=0)
    state = {'state': {'model': {f'model.{k}': v for k, v in source.state_dict().items()},
                       'timestamp': {'batch': 10}}}
    dcp.save(state, checkpoint_id=str(tmp_path / 'composer'), no_dist=True)
    assert composer.is_composer_checkpoint(str(tmp_path / 'composer'))
    target = Tiny()
    load(str(tmp_path / 'composer'), target, weights_only=True)
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values()))


# ----- S3 (a real SeaweedFS server on loopback) ------------------------------------------------------------------

@pytest.mark.slow
def test_s3_save_autoresume_and_load(s3_server, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    folder = f's3://{TEST_BUCKET}/{uuid.uuid4().hex[:8]}/checkpoints'
    model, optimizer = _trained(seed=0)
    _save(folder, 1, model, optimizer, num_to_keep=1)
    _steps(model, optimizer, 1)
    expected = _full_state(model, optimizer)
    path = _save(folder, 2, model, optimizer, num_to_keep=1)
    client = s3_server.client()
    prefix = folder.removeprefix(f's3://{TEST_BUCKET}/') + '/'
    listed = client.list_objects_v2(Bucket=TEST_BUCKET, Prefix=prefix)['Contents']
    keys = {o['Key'].removeprefix(prefix) for o in listed}
    assert keys == {'latest', 'ep0-ba2/.metadata', 'ep0-ba2/.complete', 'ep0-ba2/__0_0.distcp'}  # ba1 pruned
    assert find_latest(folder) == path
    fresh, fresh_optimizer = _trained(seed=1, steps=1)
    restored = load(path, fresh, fresh_optimizer)
    _assert_equal_states(_full_state(fresh, fresh_optimizer), expected)
    assert restored.timestamp.batch == 2


# ----- two ranks (FSDP2 fully_shard over gloo): 1 -> 2 and 2 -> 1 --------------------------------------------------


def _two_rank_main(rank: int, world_size: int, root: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(100 + rank)  # different on purpose: everything must come from the checkpoint
    model = Tiny()
    mesh = init_device_mesh('cpu', (world_size,))
    fully_shard(model.inp, mesh=mesh)
    fully_shard(model.out, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    # 1 -> 2: the single-rank checkpoint written by the test
    restored = load(find_latest(f'{root}/one', rank=rank, world_size=world_size), model, optimizer,
                    rank=rank, world_size=world_size)
    _assert_equal_states(_full_state(model, optimizer), torch.load(f'{root}/one-expected.pt'))
    assert restored.rng is None and restored.saved_world_size == 1 and restored.timestamp.batch == 7
    assert restored.loader_state == {'sample_in_epoch': 28}
    restored.restore_rng(seed=17, rank=rank)
    draws = torch.rand(2)
    gathered = [torch.empty(2) for _ in range(world_size)]
    dist.all_gather(gathered, draws)
    assert not torch.equal(gathered[0], gathered[1])  # reseeded per rank
    # train on, then 2 -> 1: save on two ranks for the test to load on one
    _steps(model, optimizer, 1)
    expected = _full_state(model, optimizer)
    parts = CheckpointParts(model, optimizer, Timestamp(batch=8, sample=32), {'sample_in_epoch': 32}, 'seed: 17\n')
    save(SaveSettings(f'{root}/two'), parts, rank=rank, world_size=world_size)
    if rank == 0:
        torch.save(expected, f'{root}/two-expected.pt')


@pytest.mark.slow
def test_resharding_one_to_two_and_two_to_one(tmp_path: Path) -> None:
    model, optimizer = _trained(seed=0)
    torch.save(_full_state(model, optimizer), tmp_path / 'one-expected.pt')
    _save(tmp_path / 'one', 7, model, optimizer)

    run_ranks(_two_rank_main, 2, str(tmp_path), timeout=90)

    path = find_latest(str(tmp_path / 'two'))
    keys = set(layout.read_metadata(path).state_dict_metadata)
    assert {'rng/rank0', 'rng/rank1', 'timestamp', 'loader', 'config'} <= keys
    fresh, fresh_optimizer = _trained(seed=5, steps=1)
    restored = load(path, fresh, fresh_optimizer)
    _assert_equal_states(_full_state(fresh, fresh_optimizer), torch.load(tmp_path / 'two-expected.pt'))
    assert restored.saved_world_size == 2 and restored.rng is None
    assert restored.timestamp == Timestamp(batch=8, sample=32)
    assert restored.loader_state == {'sample_in_epoch': 32}


# ----- LoRA: a pretraining checkpoint into an adapted model -------------------------------------------------------

LORA = {'peft_type': 'LORA', 'task_type': 'CAUSAL_LM', 'r': 2, 'lora_alpha': 4, 'lora_dropout': 0.0,
        'target_modules': ['Wqkv', 'down_proj']}


def _mpt(seed: int, **keys) -> nn.Module:
    from llmfoundry.models.builders import build_model

    torch.manual_seed(seed)
    return build_model({'name': 'mpt_causal_lm', 'd_model': 16, 'n_heads': 2, 'n_layers': 2, 'vocab_size': 32,
                        'max_seq_len': 8, 'attn_config': {'attn_impl': 'torch'}, **keys})


def _pretrained_mpt() -> tuple[nn.Module, torch.optim.Optimizer]:
    """A plain MPT after one optimizer step, so its checkpoint holds optimizer state too."""
    model = _mpt(seed=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(input_ids=torch.arange(8).view(1, 8)).logits.square().mean().backward()
    optimizer.step()
    return model, optimizer


def _assert_base_loaded(adapted: nn.Module, source: nn.Module, adapter_before: dict) -> None:
    from llmfoundry.models.peft_adapter import base_name, is_adapter_parameter

    expected = source.state_dict()
    for name, value in adapted.state_dict().items():
        if is_adapter_parameter(name):
            assert torch.equal(value, adapter_before[name]), name  # kept at its init
        else:
            assert torch.equal(value, expected[base_name(name)]), name
    assert len(adapter_before) == 2 * 2 * 2


@pytest.mark.parametrize('composer_pt', [False, True])
def test_pretraining_checkpoint_loads_into_a_lora_model_as_base_weights(tmp_path: Path, caplog, composer_pt) -> None:
    source, source_optimizer = _pretrained_mpt()
    if composer_pt:
        path = str(tmp_path / 'ep0-ba10-rank0.pt')
        torch.save(_composer_layout(source), path)
    else:
        path = _save(tmp_path, 5, source, source_optimizer)
    adapted = _mpt(seed=4, peft_config=LORA)
    adapter_before = {name: value.clone() for name, value in adapted.state_dict().items() if 'lora_' in name}
    optimizer = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=1e-2)
    with caplog.at_level('INFO', logger='llmfoundry.train.checkpoint.checkpointer'):
        restored = load(path, adapted, optimizer)
    assert 'loading its model weights as the base weights only' in caplog.text
    assert restored.timestamp is None and restored.loader_state is None and optimizer.state == {}
    _assert_base_loaded(adapted, source, adapter_before)


def test_a_missing_base_weight_is_refused_when_strict(tmp_path: Path) -> None:
    source, _ = _pretrained_mpt()
    layout_ = _composer_layout(source)
    del layout_['state']['model']['model.transformer.blocks.0.attn.Wqkv.weight']
    path = str(tmp_path / 'ep0-ba10-rank0.pt')
    torch.save(layout_, path)
    with pytest.raises(CheckpointError, match=r'lacks the base weights transformer\.blocks\.0\.attn\.Wqkv\.base_layer'):
        load(path, _mpt(seed=4, peft_config=LORA), weights_only=True)
