"""Token metrics equal a direct computation over all target tokens; sync() gives the global values across ranks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from ranks import collect_from_ranks

from llmfoundry.train.metrics import LanguageCrossEntropy, LanguagePerplexity, TokenAccuracy, metric_name

VOCAB = 11


def batch(seed: int, rows: int = 3, seq: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and input-aligned labels with -100 at some positions, the last one a fully ignored row."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, seq, VOCAB, generator=generator)
    labels = torch.randint(0, VOCAB, (rows, seq), generator=generator)
    labels[0, 4:] = -100
    labels[-1] = -100
    return logits, labels


def direct(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over every target token, by an explicit loop over positions."""
    losses, correct = [], 0
    for logits, labels in batches:
        for row in range(labels.shape[0]):
            for i in range(labels.shape[1] - 1):
                target = int(labels[row, i + 1])
                if target == -100:
                    continue
                log_probs = torch.log_softmax(logits[row, i].double(), dim=-1)
                losses.append(-float(log_probs[target]))
                correct += int(int(logits[row, i].argmax()) == target)
    return sum(losses) / len(losses), correct / len(losses)


def updated(batches):
    metrics = [LanguageCrossEntropy(), LanguagePerplexity(), TokenAccuracy()]
    for logits, labels in batches:
        for metric in metrics:
            metric.update(logits, labels)
    return metrics


def test_metrics_equal_direct_computation_over_several_batches():
    batches = [batch(0), batch(1, rows=2, seq=5)]
    ce, accuracy = direct(batches)
    cross_entropy, perplexity, token_accuracy = updated(batches)
    assert cross_entropy.compute() == pytest.approx(ce, rel=1e-6)
    assert perplexity.compute() == pytest.approx(math.exp(ce), rel=1e-6)
    assert token_accuracy.compute() == pytest.approx(accuracy, abs=1e-12)
    # token-weighted, not a mean of per-batch means: the batches have different numbers of targets
    per_batch = [direct([b])[0] for b in batches]
    assert cross_entropy.compute() != pytest.approx(sum(per_batch) / 2, rel=1e-6)


def test_cross_entropy_matches_the_models_shifted_loss_in_bf16():
    logits, labels = batch(2)
    metric = LanguageCrossEntropy()
    metric.update(logits.bfloat16(), labels)
    expected = F.cross_entropy(logits.bfloat16().float()[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1))
    assert metric.compute() == pytest.approx(float(expected), rel=1e-6)


def test_reset_and_empty_and_shape_errors():
    metric = TokenAccuracy()
    assert math.isnan(metric.compute())
    metric.update(*batch(3))
    metric.reset()
    assert math.isnan(metric.compute())
    metric.sync()  # without torch.distributed: the local values
    assert math.isnan(metric.compute())
    logits, labels = batch(3)
    with pytest.raises(ValueError, match='disagree'):
        metric.update(logits[:, :-1], labels)


def test_metric_names_as_llm_foundry_logs_them():
    assert metric_name('train', LanguageCrossEntropy()) == 'metrics/train/LanguageCrossEntropy'
    assert metric_name('eval', LanguagePerplexity()) == 'metrics/eval/LanguagePerplexity'
    assert metric_name('eval', TokenAccuracy(), 'c4') == 'metrics/eval/c4/TokenAccuracy'
    assert metric_name('eval', 'LanguageCrossEntropy', None) == 'metrics/eval/LanguageCrossEntropy'


def _rank_main(rank: int, world_size: int, results: dict) -> None:
    # rank 0 sees two batches, rank 1 one: unequal token counts, so the global mean is token-weighted
    metrics = updated([batch(0), batch(1)] if rank == 0 else [batch(2, rows=2, seq=5)])
    for metric in metrics:
        metric.sync()
        metric.sync()  # a second sync must not double-count
    results[rank] = [metric.compute() for metric in metrics]


@pytest.mark.slow
def test_sync_gives_global_values_across_two_gloo_ranks():
    ce, accuracy = direct([batch(0), batch(1), batch(2, rows=2, seq=5)])
    collected = collect_from_ranks(_rank_main, 2)
    for rank in (0, 1):
        assert collected[rank] == pytest.approx([ce, math.exp(ce), accuracy], rel=1e-6)
