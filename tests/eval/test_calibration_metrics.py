"""llm-foundry's expected calibration error metrics: hand-computed buckets, and through a task run against direct
forward passes of a tiny MPT."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from eval_helpers import char_tokenizer, log_probs, task, tiny_mpt, write_jsonl
from ranks import run_ranks

from llmfoundry.eval.metrics import (
    InContextLearningLMExpectedCalibrationError,
    InContextLearningMCExpectedCalibrationError,
)
from llmfoundry.eval.report import accuracy_pairs
from llmfoundry.eval.runner import build_task, evaluate_task
from llmfoundry.interfaces import DistInfo

ONE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device('cpu'))


def choice(*probabilities: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits over a 2-token vocabulary giving the target token (0) these probabilities, one per position."""
    p = torch.tensor(probabilities, dtype=torch.float64)
    return torch.stack([p.log(), (1 - p).log()], dim=-1), torch.zeros(len(probabilities), dtype=torch.long)


def test_multiple_choice_confidence_is_the_best_mean_probability_over_their_sum():
    metric = InContextLearningMCExpectedCalibrationError()
    metric.update([choice(0.9, 0.74), choice(0.2)], gold=0)  # means 0.82, 0.2: confidence 0.804, right
    metric.update([choice(0.35), choice(0.35), choice(0.2)], gold=1)  # a tie goes to the first: 0.389, wrong
    metric.update([choice(0.3), choice(0.65), choice(0.1)], gold=1)  # confidence 0.619, right
    # buckets 8, 3 and 6 (midpoints 0.85, 0.35, 0.65), one example each
    assert metric.compute() == pytest.approx((abs(1 - 0.85) + abs(0 - 0.35) + abs(1 - 0.65)) / 3)
    assert metric.total == 3


def test_language_modelling_confidence_is_the_least_sure_greedy_token():
    metric = InContextLearningLMExpectedCalibrationError()
    right_logits, targets = choice(0.9, 0.62)  # greedy token 0 at both positions, the target: confidence 0.62
    metric.update(right_logits, targets)
    wrong_logits, _ = choice(0.05)  # greedy token 1 with probability 0.95, the target is 0
    metric.update(wrong_logits, torch.zeros(1, dtype=torch.long))
    assert metric.compute() == pytest.approx(0.5 * abs(1 - 0.65) + 0.5 * abs(0 - 0.95))

    certain = InContextLearningLMExpectedCalibrationError()
    certain.update(torch.tensor([[0.0, -1e4]]), torch.zeros(1, dtype=torch.long))  # confidence 1.0: the top bucket
    assert certain.bucket_totals[-1] == 1 and certain.compute() == pytest.approx(0.05)
    assert math.isnan(InContextLearningLMExpectedCalibrationError().compute())


def test_a_task_reports_calibration_beside_accuracy(tmp_path: Path):
    tokenizer = char_tokenizer()
    model = tiny_mpt(len(tokenizer))
    records = [{'query': 'sky is', 'choices': ['blue', 'green'], 'gold': 0},
               {'query': 'grass is', 'choices': ['blue', 'green', 'red'], 'gold': 1}]
    names = ['InContextLearningMultipleChoiceAccuracy', 'InContextLearningMCExpectedCalibrationError']
    uri = write_jsonl(tmp_path / 'mc.jsonl', records)
    config = task(uri, 'multiple_choice', [0], metric_names=names)
    (result,) = evaluate_task(model, tokenizer, config, ONE)
    expected = InContextLearningMCExpectedCalibrationError()
    for example, record in zip(build_task(config, tokenizer).examples(records, 0, uri), records):
        means = [log_probs(model, r.context, r.continuation).exp().mean().item() for r in example.requests]
        best = max(means)
        expected.add_confident(best / sum(means), means.index(best) == record['gold'])
    assert result.metrics['InContextLearningMCExpectedCalibrationError'] == pytest.approx(expected.compute())
    assert [name for name, _ in accuracy_pairs([result])] == ['task/0-shot']  # the gauntlet averages accuracy only


def _two_rank_sync(rank: int, world_size: int) -> None:
    metric = InContextLearningMCExpectedCalibrationError()
    if rank == 0:
        metric.update([choice(0.9, 0.74), choice(0.2)], gold=0)
    else:
        metric.update([choice(0.35), choice(0.35), choice(0.2)], gold=1)
        metric.update([choice(0.3), choice(0.65), choice(0.1)], gold=1)
    metric.sync()
    assert metric.total == 3
    assert metric.compute() == pytest.approx((abs(1 - 0.85) + abs(0 - 0.35) + abs(1 - 0.65)) / 3)


@pytest.mark.slow
def test_ranks_sum_their_buckets():
    run_ranks(_two_rank_sync, 2, timeout=60)
