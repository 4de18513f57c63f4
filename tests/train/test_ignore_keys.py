"""load_ignore_keys / save_ignore_keys: Composer's state paths leave weights, optimizer state, progress or RNG out
of a load / a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ranks import run_ranks
from test_checkpoint import Tiny, _composer_layout, _full_state, _save, _trained
from test_divergence import batches_logged, logged
from test_train_e2e import MPT_SIZE, TINY_YAML, overrides

from llmfoundry.config.time import Timestamp
from llmfoundry.config.validation import ConfigError
from llmfoundry.train.checkpoint import CheckpointError, layout, load
from llmfoundry.train.checkpoint.ignore_keys import resolve
from llmfoundry.train.entry import main as train

NAMES = ['inp.weight', 'inp.bias', 'out.weight', 'out.bias']


@pytest.mark.parametrize(('patterns', 'weights', 'parts'), [
    (['state/model/inp.*'], {'inp.weight', 'inp.bias'}, set()),
    (['state/model/model.out.weight'], {'out.weight'}, set()),  # Composer's HF wrapper prefix
    (['state/model/*.bias'], {'inp.bias', 'out.bias'}, set()),
    (['state/model'], set(NAMES), set()),
    (['state/optimizers'], set(), {'optim'}),
    (['state/optimizers/*'], set(), {'optim'}),
    (['state/optimizers/DecoupledAdamW'], set(), {'optim'}),
    (['rng', 'state/dataset_state'], set(), {'rng', 'loader'}),
    (['state/timestamp'], set(), {'timestamp', 'loader', 'rng'}),  # a position and RNG of another batch
    (['state/schedulers', 'state/rank_zero_seed'], set(), set()),  # Composer's own state: nothing to leave out
    (['state/*'], set(NAMES), {'optim', 'timestamp', 'loader', 'rng'}),
])
def test_composer_paths_name_the_parts_of_our_checkpoints(patterns, weights, parts):
    ignored = resolve(patterns, NAMES, 'DecoupledAdamW')
    assert ignored.weights == weights
    assert ignored.parts == parts


@pytest.mark.parametrize('pattern', ['state/model/wte.weight', 'state/optimizer', 'state/optimizers/Adam/state/0'])
def test_a_pattern_that_matches_nothing_is_refused(pattern):
    with pytest.raises(ConfigError, match=rf"load_ignore_keys\[0\]='{pattern}' matches nothing in the checkpoint"):
        resolve([pattern], NAMES, 'DecoupledAdamW')


def test_ignored_weights_keep_their_init_and_the_rest_loads(tmp_path: Path):
    model, optimizer = _trained(seed=0)
    saved = _full_state(model, optimizer)
    path = _save(tmp_path, 7, model, optimizer)
    fresh, fresh_optimizer = _trained(seed=1, steps=0)
    init = {name: tensor.clone() for name, tensor in fresh.state_dict().items()}
    restored = load(path, fresh, fresh_optimizer, ignore_keys=['state/model/model.inp.*'])
    state = fresh.state_dict()
    assert all(torch.equal(state[name], init[name]) for name in ('inp.weight', 'inp.bias'))
    assert all(torch.equal(state[name], saved['model'][name]) for name in ('out.weight', 'out.bias'))
    assert restored.timestamp == Timestamp(batch=7, sample=28)
    assert torch.equal(fresh_optimizer.state[fresh.out.weight]['exp_avg'], saved['optim']['out.weight']['exp_avg'])


def test_leaving_out_the_optimizer_and_progress_is_a_warm_start_with_the_weights(tmp_path: Path):
    model, optimizer = _trained(seed=0)
    path = _save(tmp_path, 7, model, optimizer)
    fresh, fresh_optimizer = _trained(seed=1, steps=0)
    restored = load(path, fresh, fresh_optimizer, ignore_keys=['state/optimizers', 'state/timestamp'])
    assert not fresh_optimizer.state  # no moments, no step counts
    assert restored.timestamp is None and restored.loader_state is None and restored.rng is None
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))

    other = Tiny()
    only_rng = load(path, other, torch.optim.AdamW(other.parameters()), ignore_keys=['rng'])
    assert only_rng.timestamp == Timestamp(batch=7, sample=28) and only_rng.rng is None
    assert only_rng.loader_state == {'sample_in_epoch': 28}


def test_composer_checkpoints_leave_out_weights_too(tmp_path: Path):
    source, _ = _trained(seed=3, steps=0)
    path = str(tmp_path / 'ep0-ba10-rank0.pt')
    torch.save(_composer_layout(source), path)
    target = Tiny()
    init = target.out.weight.clone()
    load(path, target, weights_only=True, ignore_keys=['state/model/model.out.weight'])
    assert torch.equal(target.out.weight, init)
    assert torch.equal(target.inp.weight, source.inp.weight)


def test_a_run_warm_started_without_progress_trains_from_batch_one(mds_dir, tokenizer_dir, tmp_path: Path):
    """The config keys reach the checkpoints: save_ignore_keys leaves the RNG out; load_ignore_keys takes the weights
    of load_path but not its progress (a new run)."""
    first, second = tmp_path / 'first', tmp_path / 'second'
    assert train([str(TINY_YAML), *overrides(mds_dir, tokenizer_dir, first, *MPT_SIZE, 'max_duration=6ba',
                                             'eval_interval=100ba', 'save_ignore_keys=[rng]')]) == 0
    assert not any(key.startswith('rng') for key in layout.read_metadata(str(first / 'ep0-ba6')).state_dict_metadata)
    assert train([str(TINY_YAML), *overrides(mds_dir, tokenizer_dir, second, *MPT_SIZE, 'max_duration=2ba',
                                             'eval_interval=100ba', f'load_path={first}/ep0-ba6',
                                             'load_ignore_keys=[state/timestamp, state/optimizers]')]) == 0
    assert batches_logged(second) == [1, 2]  # batch 7 onwards had the timestamp been loaded: 6ba would be done
    (_, trained_loss), *_ = logged(second, 'loss/train/total')
    (_, fresh_loss), *_ = logged(first, 'loss/train/total')
    assert trained_loss < fresh_loss - 0.1  # the first run's weights


def _two_rank_load(rank: int, world_size: int, root: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(100)
    model = Tiny()
    mesh = init_device_mesh('cpu', (world_size,))
    for module in (model.inp, model.out, model):
        fully_shard(module, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = _full_state(model, optimizer)['model']
    restored = load(f'{root}/ep0-ba7', model, optimizer, rank=rank, world_size=world_size,
                    ignore_keys=['state/model/inp.*', 'state/optimizers'])
    after = _full_state(model, optimizer)
    saved = torch.load(f'{root}/expected.pt')
    assert all(torch.equal(after['model'][name], before[name]) for name in ('inp.weight', 'inp.bias'))
    assert all(torch.equal(after['model'][name], saved['model'][name]) for name in ('out.weight', 'out.bias'))
    # get_state_dict gave the optimizer zero state before the load; the load left it so
    assert all(not per['exp_avg'].any() for per in after['optim'].values())
    assert restored.timestamp == Timestamp(batch=7, sample=28)


@pytest.mark.slow
def test_two_fsdp_ranks_leave_out_the_same_weights(tmp_path: Path):
    model, optimizer = _trained(seed=0)
    torch.save(_full_state(model, optimizer), tmp_path / 'expected.pt')
    _save(tmp_path, 7, model, optimizer)
    run_ranks(_two_rank_load, 2, str(tmp_path), timeout=90)


def test_save_ignore_keys_leaves_parts_out_and_the_load_copes(tmp_path: Path, caplog):
    model, optimizer = _trained(seed=0)
    path = _save(tmp_path / 'a', 7, model, optimizer, ignore_keys=('state/optimizers', 'rng'))
    keys = set(layout.read_metadata(path).state_dict_metadata)
    assert not any(key.startswith(('optim', 'rng')) for key in keys) and {'timestamp', 'loader'} <= keys
    fresh, fresh_optimizer = _trained(seed=1, steps=0)
    restored = load(path, fresh, fresh_optimizer)
    assert 'holds no optimizer state (saved with save_ignore_keys): the optimizer starts fresh' in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert restored.timestamp == Timestamp(batch=7, sample=28) and restored.rng is None

    path = _save(tmp_path / 'b', 7, model, optimizer, ignore_keys=('state/model/model.out.*',))
    with pytest.raises(CheckpointError, match=r'lacks the weights out\.weight, out\.bias; set load_strict_model_w'):
        load(path, Tiny(), weights_only=True)
    partial = Tiny()
    init = partial.out.weight.clone()
    load(path, partial, weights_only=True, strict=False)
    assert torch.equal(partial.out.weight, init) and torch.equal(partial.inp.weight, model.inp.weight)
