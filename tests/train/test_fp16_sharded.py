"""amp_fp16 under FSDP2: an overflow in one rank's gradient shard skips the step on every rank, and every rank
lowers the loss scale alike (the trainer's own step, on 2 gloo ranks)."""

from __future__ import annotations

import pytest
import torch
from ranks import run_ranks
from test_parallel import sharded
from test_trainer_step import batches

from llmfoundry.config.schema import FSDPConfig, TrainConfig
from llmfoundry.config.time import Time
from llmfoundry.config.validation import from_dict
from llmfoundry.interfaces import Callback, DistInfo, MetricLogger, TrainState
from llmfoundry.optim.optimizers import build_optimizer
from llmfoundry.optim.schedulers import build_scheduler
from llmfoundry.train.trainer import Trainer


class WeightsAndScale(Callback):
    """Records the local weight shards before each step and the loss scale after it."""

    def __init__(self, trainer_ref: list) -> None:
        self.trainer_ref = trainer_ref
        self.weights: list[list[torch.Tensor]] = []
        self.scales: list[float] = []

    def batch_start(self, state, logger) -> None:
        self.weights.append([p.detach().to_local().clone() for p in state.model.parameters()])

    def batch_end(self, state, logger) -> None:
        self.scales.append(self.trainer_ref[0].scaler.get_scale())


def overflow_on_rank_one_at_step_one(trainer: Trainer) -> None:
    """Before the scaler's inf check of the first step, rank 1 puts an inf into its local shard of one gradient."""
    unscale = trainer.scaler.unscale_

    def poisoned_unscale(optimizer) -> None:
        state = trainer.state
        if state.dist.rank == 1 and state.timestamp.batch == 0:
            next(iter(state.model.parameters())).grad.to_local().view(-1)[0] = float('inf')
        unscale(optimizer)

    trainer.scaler.unscale_ = poisoned_unscale


def _rank_main(rank: int, world_size: int, results: dict) -> None:
    config = from_dict(TrainConfig, dict(
        model={}, tokenizer={}, optimizer={'name': 'decoupled_adamw', 'lr': 1e-2}, train_loader={},
        scheduler={'name': 'constant_with_warmup', 't_warmup': '0ba'}, max_duration='2ba', max_seq_len=16,
        global_train_batch_size=4, device_train_microbatch_size=2, precision='amp_fp16'))
    model = sharded(FSDPConfig(sharding_strategy='FULL_SHARD'))
    state = TrainState(config=config, model=model, optimizer=build_optimizer(config.optimizer, model),
                       dist=DistInfo(rank, world_size, rank, torch.device('cpu')), max_duration=Time.parse('2ba'),
                       run_name='t', run_folder=results['folder'], device_train_batch_size=2, microbatch_size=2)
    trainer_ref: list = []
    probe = WeightsAndScale(trainer_ref)
    loader = [{k: v.chunk(world_size)[rank] for k, v in batch.items()} for batch in batches(2)]
    trainer = Trainer(config, state, module=model, train_loader=loader, eval_loaders=[], callbacks=[probe],
                      logger=MetricLogger([], rank == 0), scheduler=build_scheduler(config.scheduler), clipping=None,
                      eval_interval=Time.parse('100ba'), console_interval=Time.parse('100ba'))
    trainer_ref.append(trainer)
    overflow_on_rank_one_at_step_one(trainer)
    trainer.fit()
    results[rank] = {
        'skipped': all(torch.equal(a, b) for a, b in zip(probe.weights[0], probe.weights[1], strict=True)),
        'trained_after': not all(torch.equal(a, b) for a, b in
                                 zip(probe.weights[1], [p.detach().to_local() for p in model.parameters()],
                                     strict=True)),
        'scales': probe.scales,
    }


@pytest.mark.slow
def test_an_overflow_in_one_ranks_shard_skips_the_step_on_every_rank(tmp_path):
    results = torch.multiprocessing.Manager().dict({'folder': tmp_path})
    run_ranks(_rank_main, 2, results, timeout=150)
    first, second = results[0], results[1]
    assert first['skipped'] and second['skipped'], (first, second)
    assert first['trained_after'] and second['trained_after'], (first, second)
    assert first['scales'] == second['scales'] and first['scales'][0] == first['scales'][1] < 2.0 ** 16, (first, second)
