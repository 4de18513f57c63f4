"""Plain LM-loss evaluation over labelled eval loaders: LanguageCrossEntropy, LanguagePerplexity and TokenAccuracy,
logged as `metrics/eval/{Metric}` (one unlabelled loader) or `metrics/eval/{label}/{Metric}`.

Shared by the trainer's evaluation and `llmfoundry eval`; the caller supplies the forward pass (its precision,
its model's inputs). Every rank must call this: the metrics are all-reduced at the end.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch
from torch import nn

from .metrics import LanguageCrossEntropy, LanguagePerplexity, TokenAccuracy, metric_name

Forward = Callable[[dict[str, torch.Tensor]], torch.Tensor]  # a batch on the device -> logits (batch, seq, vocab)


def takes_sequence_id(model: nn.Module) -> bool:
    """Whether the model's forward accepts `sequence_id` (MPT does; transformers' models do not)."""
    return 'sequence_id' in inspect.signature(model.forward).parameters


def model_inputs(batch: dict[str, torch.Tensor], sequence_id: bool) -> dict[str, torch.Tensor | None]:
    """The forward inputs of a loader batch: input_ids, attention_mask, and the batch's sequence_id when the model
    takes it (`sequence_id`: takes_sequence_id of the model)."""
    inputs = {'input_ids': batch['input_ids'], 'attention_mask': batch.get('attention_mask')}
    if sequence_id and 'sequence_id' in batch:
        inputs['sequence_id'] = batch['sequence_id']
    return inputs


@torch.no_grad()
def evaluate_loss(forward: Forward, loaders: Iterable[tuple[str, Iterable[dict[str, torch.Tensor]]]],
                  device: torch.device, subset_num_batches: int = -1) -> dict[str, float]:
    """The eval metrics of each (label, loader); `subset_num_batches` >= 0 stops each loader after that many
    batches (llm-foundry's eval_subset_num_batches; -1: the whole loader)."""
    results: dict[str, float] = {}
    for label, loader in loaders:
        metrics = [LanguageCrossEntropy(), LanguagePerplexity(), TokenAccuracy()]
        for index, batch in enumerate(loader):
            if 0 <= subset_num_batches <= index:
                break
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = forward(batch)
            for metric in metrics:
                metric.update(logits, batch['labels'])
        for metric in metrics:
            metric.sync()
            results[metric_name('eval', metric, label)] = metric.compute()
    return results
