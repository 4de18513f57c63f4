"""Token-level language-model metrics, logged under llm-foundry's names (`metrics/train/LanguageCrossEntropy`, ...).

`update(logits, labels)` takes the model's logits for every position, shape (batch, seq, vocab), and the labels
of the *inputs*, shape (batch, seq), with -100 where no loss is wanted: the metric shifts them itself (position i
predicts label i+1), exactly as `MPTForCausalLM.forward` does for its loss, so the trainer passes the batch's
`labels` unchanged.

Each metric accumulates sufficient statistics (a sum and the number of target tokens) rather than per-batch means,
so every target token weighs the same whatever the batch, microbatch or rank it came from. `sync()` all-reduces
those statistics across ranks and `compute()` then returns the global value; update() after a sync continues from
the local statistics, so calling sync() again (e.g. at the next log) never double-counts.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from llmfoundry.data.labels import IGNORE_INDEX

__all__ = ['LanguageCrossEntropy', 'LanguagePerplexity', 'TokenAccuracy', 'metric_name']


def _shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, targets) as flat (N, vocab) and (N,): position i's logits against label i+1."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f'logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree: expected logits '
                         '(batch, seq, vocab) for labels (batch, seq).')
    # Shift the labels rather than slice the logits: a view instead of a copy of batch x seq x vocab.
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).to(logits.device)


class _TokenMetric:
    """A sum over target tokens and their count, reduced across ranks on sync(). Subclasses define `_sum`."""

    def __init__(self) -> None:
        self._local: torch.Tensor | None = None  # [sum, number of target tokens], float64
        self._global: torch.Tensor | None = None

    @property
    def name(self) -> str:
        return type(self).__name__

    def _sum(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        predictions, targets = _shifted(logits, labels)
        self.add(self._sum(predictions, targets), (targets != IGNORE_INDEX).sum())

    @torch.no_grad()
    def add(self, total: torch.Tensor, count: torch.Tensor | int) -> None:
        """Add an already computed sum over `count` target tokens (the trainer's loss sum: no second pass)."""
        stats = torch.stack([total.detach().double(), torch.as_tensor(count, device=total.device).double()])
        self._local = stats if self._local is None else self._local + stats
        self._global = None

    def reset(self) -> None:
        self._local = self._global = None

    def sync(self, process_group: dist.ProcessGroup | None = None) -> None:
        """All-reduce the statistics (a collective: every rank of the group must call it, updated or not)."""
        local = self._local if self._local is not None else torch.zeros(2, dtype=torch.float64,
                                                                         device=_collective_device(process_group))
        if not (dist.is_available() and dist.is_initialized()):
            self._global = local
            return
        reduced = local.clone()
        dist.all_reduce(reduced, group=process_group)
        self._global = reduced

    def _totals(self) -> tuple[float, float]:
        stats = self._global if self._global is not None else self._local
        if stats is None:
            return 0.0, 0.0
        total, count = stats.tolist()
        return total, count

    def compute(self) -> float:
        """The mean over target tokens (global after sync()); NaN when no target token was seen."""
        total, count = self._totals()
        return total / count if count else math.nan


def _collective_device(process_group: dist.ProcessGroup | None) -> torch.device:
    """Where a rank that saw no batch puts its zeros: NCCL reduces only CUDA tensors."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend(process_group) == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


class LanguageCrossEntropy(_TokenMetric):
    """Mean next-token cross-entropy (nats) over target tokens, computed in float32 whatever the logits' dtype."""

    def _sum(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(predictions.float(), targets, ignore_index=IGNORE_INDEX, reduction='sum')


class LanguagePerplexity(LanguageCrossEntropy):
    """exp of the mean cross-entropy over all target tokens (not a mean of per-batch perplexities)."""

    def compute(self) -> float:
        return math.exp(super().compute())


class TokenAccuracy(_TokenMetric):
    """Fraction of target tokens whose argmax prediction is the label."""

    def _sum(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return ((predictions.argmax(dim=-1) == targets) & (targets != IGNORE_INDEX)).sum()


def metric_name(split: str, metric: _TokenMetric | str, label: str | None = None) -> str:
    """llm-foundry's logged name: `metrics/train/LanguageCrossEntropy`, `metrics/eval/TokenAccuracy`, and with
    several labelled eval loaders `metrics/eval/<label>/LanguagePerplexity`."""
    name = metric if isinstance(metric, str) else metric.name
    return '/'.join(part for part in ('metrics', split, label, name) if part)
