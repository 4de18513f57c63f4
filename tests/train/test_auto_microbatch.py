"""device_train_microbatch_size: auto: an out-of-memory error (simulated: LLMFOUNDRY_OOM_ABOVE_MICROBATCH) on one rank
halves the microbatch on every rank (also when it is raised inside one rank's sharded forward or backward, while the
other rank is still in the pass's collectives), the batch is retried without the failed attempt's gradients, and the
run then equals one with the final microbatch size fixed. One in the optimizer step is retried only if no rank's step
had written anything; otherwise every rank stops with the same error."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from ranks import collect_from_ranks
from test_trainer_step import batches, make_trainer

from llmfoundry.config.schema import FSDPConfig
from llmfoundry.config.validation import ConfigError
from llmfoundry.interfaces import Callback
from llmfoundry.train.microbatch import INSIDE_ENV, SIMULATE_ENV
from llmfoundry.train.parallel import find_blocks


class Losses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.microbatches: list[int] = []

    def batch_end(self, state, logger) -> None:
        self.losses.append(state.loss)
        self.microbatches.append(state.microbatch_size)


class MicrobatchFrom(Callback):
    """The reference: microbatch `size` from batch `batch` on, set before that batch starts (no failed attempt)."""

    def __init__(self, batch: int, size: int) -> None:
        self.batch, self.size = batch, size

    def batch_start(self, state, logger) -> None:
        if state.timestamp.batch + 1 == self.batch:
            state.microbatch_size = self.size


def test_a_later_out_of_memory_halves_and_retries_the_step(tmp_path, monkeypatch, caplog):
    data = batches(3)
    monkeypatch.setenv(SIMULATE_ENV, '0:1:2')  # from batch 2 on, more than 1 row runs out of memory
    recorded = Losses()
    auto = make_trainer(tmp_path, data, 'auto', [recorded])
    with caplog.at_level(logging.WARNING, logger='llmfoundry.train.microbatch'):
        auto.fit()
    assert recorded.microbatches == [4, 1, 1]
    assert 'batch 2 ran out of memory on some rank with microbatch 4; retrying it with 2' in caplog.text
    assert 'batch 2 ran out of memory on some rank with microbatch 2; retrying it with 1' in caplog.text
    monkeypatch.delenv(SIMULATE_ENV)
    reference = Losses()
    fixed = make_trainer(tmp_path, data, 4, [MicrobatchFrom(2, 1), reference])
    fixed.fit()
    assert recorded.losses == reference.losses
    for (name, got), expected in zip(auto.state.model.named_parameters(), fixed.state.model.parameters()):
        assert torch.equal(got, expected), name


def out_of_memory_in_the_step(trainer, above: int) -> None:
    """trainer's optimizer step runs out of memory (simulated) while the microbatch is above `above` rows, as a first
    step does allocating the optimizer's state: after the first parameter's first state tensor, before any update."""
    optimizer, step = trainer.state.optimizer, trainer.state.optimizer.step

    def failing_step(*args, **kwargs):
        if trainer.state.microbatch_size > above:
            first = optimizer.param_groups[0]['params'][0]
            optimizer.state[first]['exp_avg'] = torch.zeros_like(first)
            raise torch.OutOfMemoryError('simulated: allocating the optimizer state')
        return step(*args, **kwargs)

    optimizer.step = failing_step


@pytest.mark.parametrize('precision', ['fp32', 'amp_fp16'])  # amp_fp16: the failed attempt's unscale_ is undone
def test_an_out_of_memory_in_the_first_optimizer_step_halves_and_retries_exactly(tmp_path, precision):
    data, recorded, reference = batches(3), Losses(), Losses()
    auto = make_trainer(tmp_path, data, 'auto', [recorded], precision=precision)
    out_of_memory_in_the_step(auto, above=2)
    auto.fit()
    make_trainer(tmp_path, data, 2, [reference], precision=precision).fit()
    assert recorded.microbatches == [2, 2, 2]
    assert recorded.losses == reference.losses
    assert auto.state.optimizer.state_dict()['state'][0]['step'].item() == 3  # the failed step's state was dropped


def test_out_of_memory_with_a_microbatch_of_one_row_is_raised(tmp_path, monkeypatch):
    monkeypatch.setenv(SIMULATE_ENV, '0:0')
    with pytest.raises(torch.OutOfMemoryError, match='even with a microbatch of 1 row'):
        make_trainer(tmp_path, batches(1), 'auto', max_duration='1ba').fit()


def test_a_fixed_microbatch_does_not_catch_out_of_memory(tmp_path, monkeypatch):
    monkeypatch.setenv(SIMULATE_ENV, '0:1')
    with pytest.raises(torch.OutOfMemoryError, match='simulated'):
        make_trainer(tmp_path, batches(1), 2, max_duration='1ba').fit()


def _train_on_rank(rank: int, world_size: int, run_folder, results) -> None:
    rows = slice(rank * 2, rank * 2 + 2)
    data = [{k: v[rows] for k, v in batch.items()} for batch in batches(3)]
    fsdp = FSDPConfig(sharding_strategy='FULL_SHARD')
    for label, microbatch in (('auto', 'auto'), ('fixed', 1)):
        os.environ[SIMULATE_ENV] = '1:1' if label == 'auto' else ''  # rank 1 only runs out of memory above 1 row
        recorder = Losses()
        make_trainer(run_folder / label, data, microbatch, [recorder], rank=rank, world_size=world_size,
                     fsdp=fsdp).fit()
        results[(rank, label)] = (recorder.losses, recorder.microbatches)


@pytest.mark.slow
def test_an_out_of_memory_on_one_rank_halves_on_every_rank(tmp_path):
    results = collect_from_ranks(_train_on_rank, 2, tmp_path, timeout=90)
    assert results[(0, 'auto')][1] == results[(1, 'auto')][1] == [1, 1, 1]
    assert results[(0, 'auto')][0] == results[(1, 'auto')][0] == results[(0, 'fixed')][0]


def _out_of_memory_inside_a_block(rank: int, world_size: int, run_folder, where: str, results) -> None:
    data = [{k: v[rank * 2:rank * 2 + 2] for k, v in batch.items()} for batch in batches(2)]
    os.environ[INSIDE_ENV] = where
    for label, microbatch in (('auto', 'auto'), ('fixed', 1)):
        os.environ[SIMULATE_ENV] = '1:1' if label == 'auto' else ''  # rank 1 only, above 1 row
        recorder = Losses()
        make_trainer(run_folder / label, data, microbatch, [recorder], rank=rank, world_size=world_size,
                     max_duration='2ba', fsdp=FSDPConfig(sharding_strategy='FULL_SHARD')).fit()
        results[(rank, label)] = (recorder.losses, recorder.microbatches)


@pytest.mark.slow
@pytest.mark.parametrize('where', ['transformer.blocks.1:forward', 'transformer.blocks.0:backward',
                                   'transformer.wte:backward'])  # the last: before the root's gradient reduction
def test_an_out_of_memory_inside_one_ranks_sharded_pass_halves_on_every_rank(tmp_path, where):
    """Without the agreement inside the pass, rank 0 waits in block 1's all-gather for rank 1 until the deadline
    fails the test, or (backward) gloo stops on a collective mismatch."""
    results = collect_from_ranks(_out_of_memory_inside_a_block, 2, tmp_path, where, timeout=60)
    assert results[(0, 'auto')][1] == results[(1, 'auto')][1] == [1, 1]
    assert results[(0, 'auto')][0] == results[(1, 'auto')][0] == results[(0, 'fixed')][0]


def fail_at_4_rows_then_in_the_2nd_microbatch_of_2(block: torch.nn.Module) -> None:
    """block's forward runs out of memory (simulated) at 4 rows, then once in the 2nd microbatch of 2 rows, after
    the 1st accumulated its gradients unsharded (FSDP reduces only in the last microbatch)."""
    rows_seen: list[int] = []

    def fail(module, args) -> None:
        rows_seen.append(args[0].shape[0])
        if rows_seen[-1] > 2 or rows_seen == [4, 2, 2]:
            raise torch.OutOfMemoryError('simulated')
    block.register_forward_pre_hook(fail)


def _out_of_memory_in_a_later_microbatch(rank: int, world_size: int, run_folder, results) -> None:
    data = [{k: v[rank * 4:rank * 4 + 4] for k, v in batch.items()} for batch in batches(2, rows=8)]
    for label, microbatch in (('auto', 'auto'), ('fixed', 1)):
        recorder = Losses()
        trainer = make_trainer(run_folder / label, data, microbatch, [recorder], rank=rank, world_size=world_size,
                               max_duration='2ba', global_train_batch_size=8,
                               fsdp=FSDPConfig(sharding_strategy='FULL_SHARD'))
        if microbatch == 'auto':
            trainer.state.microbatch_size = 4  # the device batch, as setup.py starts auto
            if rank == 1:
                fail_at_4_rows_then_in_the_2nd_microbatch_of_2(find_blocks(trainer.state.model)[1])
        trainer.fit()
        results[(rank, label)] = recorder.losses


@pytest.mark.slow
def test_a_retry_drops_the_gradients_fsdp_accumulated_in_the_failed_attempt(tmp_path):
    results = collect_from_ranks(_out_of_memory_in_a_later_microbatch, 2, tmp_path, timeout=60)
    assert results[(0, 'auto')] == results[(1, 'auto')] == results[(0, 'fixed')]


def _step_out_of_memory_on_rank_1(rank: int, world_size: int, run_folder, results) -> None:
    data = [{k: v[rank * 2:rank * 2 + 2] for k, v in batch.items()} for batch in batches(1)]
    trainer = make_trainer(run_folder, data, 'auto', rank=rank, world_size=world_size, max_duration='1ba',
                           fsdp=FSDPConfig(sharding_strategy='FULL_SHARD'))
    if rank == 1:
        out_of_memory_in_the_step(trainer, above=0)
    try:
        trainer.fit()
    except ConfigError as error:
        results[rank] = str(error)


@pytest.mark.slow
def test_an_out_of_memory_in_one_ranks_optimizer_step_after_another_updated_stops_every_rank(tmp_path):
    results = collect_from_ranks(_step_out_of_memory_on_rank_1, 2, tmp_path, timeout=90)
    assert results[0] == results[1]
    assert results[0].startswith('batch 1: the optimizer step ran out of memory on 1 rank(s); it cannot be retried '
                                 'exactly, as it may have updated weights or optimizer state on 1 rank(s).'), results[0]
