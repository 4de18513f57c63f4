"""model.loss_fn: fused_crossentropy in the trainer: the same losses, gradients and train metrics as torch's
cross-entropy on full logits, in one process and on 2 FSDP2 ranks (the LM head is the tied wte, sharded at the root)."""

from __future__ import annotations

import pytest
import torch
from ranks import collect_from_ranks
from test_trainer_step import (
    assert_float32_close,
    assert_loss_close,
    batches,
    float64_reference,
    make_trainer,
)
from torch.distributed.tensor import DTensor

from llmfoundry.config.schema import FSDPConfig
from llmfoundry.interfaces import Callback


class FullRecorder(Callback):
    """Each step's loss, full gradients and the full weights they were computed at (gathered under FSDP)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.grads: list[dict[str, torch.Tensor]] = []
        self.weights: list[dict[str, torch.Tensor]] = []

    def before_optimizer_step(self, state, logger) -> None:
        full = (lambda t: t.full_tensor() if isinstance(t, DTensor) else t.clone())
        self.grads.append({n: full(p.grad) for n, p in state.model.named_parameters()})
        self.weights.append({n: full(p.detach()) for n, p in state.model.named_parameters()})

    def batch_end(self, state, logger) -> None:
        self.losses.append(state.loss)


def run(tmp_path, fused: bool, microbatch: int = 1, **kwargs) -> tuple[FullRecorder, list[float]]:
    """The recorder and the last step's train metrics (LanguageCrossEntropy, LanguagePerplexity, TokenAccuracy)."""
    recorder = FullRecorder()
    trainer = make_trainer(tmp_path, batches(3), microbatch, [recorder], fused_loss=fused, **kwargs)
    trainer.fit()
    for metric in trainer.train_metrics:
        metric.sync()
    return recorder, [metric.compute() for metric in trainer.train_metrics]


def assert_steps_match_float64(recorder: FullRecorder, what: str) -> None:
    """Every step, at the weights it was taken from: the whole batch's exact loss and gradients."""
    for step, (batch, weights) in enumerate(zip(batches(3), recorder.weights)):
        loss, grads = float64_reference(batch, weights)
        assert_loss_close(recorder.losses[step], loss, f'{what}, step {step}')
        assert_float32_close(recorder.grads[step], grads, f'{what}, step {step}')


@pytest.mark.parametrize('microbatch', [1, 4])
def test_fused_loss_steps_equal_the_exact_loss_and_gradients(tmp_path, microbatch):
    fused, fused_metrics = run(tmp_path, True, microbatch)
    plain, plain_metrics = run(tmp_path, False, microbatch)
    assert len(fused.losses) == 3
    assert_steps_match_float64(fused, f'fused, microbatch {microbatch}')
    assert_loss_close(fused.losses[0], plain.losses[0], 'first step, fused vs plain')
    assert_float32_close(fused.grads[0], {n: g.double() for n, g in plain.grads[0].items()}, 'first step')
    assert fused_metrics == pytest.approx(plain_metrics, rel=1e-5)  # TokenAccuracy from the fused argmax count


def _rank_main(rank: int, world_size: int, tmp_path, results: dict) -> None:
    torch.set_num_threads(1)
    fsdp = FSDPConfig(sharding_strategy='FULL_SHARD')
    for fused in (True, False):
        recorder, metrics = run(tmp_path, fused, rank=rank, world_size=world_size, fsdp=fsdp)
        if rank == 0:
            results[fused] = (recorder.losses, recorder.grads, recorder.weights, metrics)


def test_two_fsdp_ranks_train_the_same_with_fused_and_plain_loss(tmp_path):
    results = collect_from_ranks(_rank_main, 2, tmp_path, timeout=150)
    recorders = {}
    for fused, (losses, grads, weights, _) in results.items():
        recorders[fused] = recorder = FullRecorder()
        recorder.losses, recorder.grads, recorder.weights = losses, grads, weights
        assert_steps_match_float64(recorder, f'2 FSDP ranks, fused={fused}')
    assert_loss_close(recorders[True].losses[0], recorders[False].losses[0], 'first step, fused vs plain')
    assert recorders[True].losses == pytest.approx(recorders[False].losses, rel=1e-4)
    assert results[True][3] == pytest.approx(results[False][3], rel=1e-5)
