"""Evaluate ICL tasks: read and check the task file, build examples per shot count (and category), let each
rank score every world_size-th example, then sum the metric counts over ranks. A model sharded with FSDP2 (the
trainer's, during training) runs the same number of forward passes on every rank."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from llmfoundry.config.validation import ConfigError
from llmfoundry.interfaces import DistInfo
from llmfoundry.registry import icl_task_types
from llmfoundry.train.distributed import agree_on_errors

from .metrics import METRICS, InContextLearningMetric
from .prompts import Request
from .scoring import continuation_logits, generate_answers, lockstep_count, precision_context
from .task_config import IclTaskConfig, is_hub_dataset
from .task_file import TaskFileError, read_hub_dataset, read_task_file, strip_strings
from .tasks import Choices, CodeEvalTask, CodeProblem, IclTask


@dataclass(frozen=True)
class TaskResult:
    """The metrics of one task at one shot count (and one category when the task has categories)."""
    label: str
    num_fewshot: int
    category: str | None
    metrics: dict[str, float]  # metric class name -> value
    size: int  # examples evaluated, over all ranks

    @property
    def name(self) -> str:
        """llm-foundry's evaluator label: '{label}/{k}-shot' or '{label}/{k}-shot/{category}'."""
        base = f'{self.label}/{self.num_fewshot}-shot'
        return f'{base}/{self.category}' if self.category is not None else base


def build_task(config: IclTaskConfig, tokenizer: PreTrainedTokenizerBase) -> IclTask:
    task_class = icl_task_types.get(config.icl_task_type, f'icl_tasks[{config.label}].icl_task_type')
    return task_class(config, tokenizer)


def build_metrics(task: IclTask) -> dict[str, InContextLearningMetric]:
    names = task.config.metric_names or [task.default_metric]
    metrics = {}
    for name in names:
        if name not in METRICS:
            raise ConfigError(f"icl task '{task.config.label}': unknown metric '{name}' (built: "
                              f"{', '.join(sorted(METRICS))}).")
        if METRICS[name].kind != task.kind:
            raise ConfigError(f"icl task '{task.config.label}': metric '{name}' cannot score "
                              f"'{task.config.icl_task_type}' tasks.")
        metrics[name] = METRICS[name]()
    return metrics


def load_records(task: IclTask) -> dict[str | None, list[dict[str, Any]]]:
    """The task file's checked records, by category (sorted, as llm-foundry does) or under None."""
    config = task.config
    uri = config.dataset_uri
    if is_hub_dataset(config):
        numbered, where = read_hub_dataset(uri, config.hf_loading_vars, config.hf_parsing_map), 'row'
    else:
        numbered, where = read_task_file(uri), 'line'
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for line, record in numbered:
        problem = task.check(record)
        if problem is None and config.has_categories and not isinstance(record.get('category'), str):
            problem = f"has_categories is set but the {where} has no string 'category' field"
        if problem is not None:
            raise TaskFileError(f'{uri}, {where} {line}: {problem}')
        category = record['category'] if config.has_categories else None
        groups.setdefault(category, []).append(strip_strings(record) if config.strip_dataset else record)
    return dict(sorted(groups.items(), key=lambda item: item[0] or ''))


def evaluate_task(model: nn.Module, tokenizer: PreTrainedTokenizerBase, config: IclTaskConfig, info: DistInfo,
                  precision: str = 'fp32', subset_num_batches: int | None = None) -> list[TaskResult]:
    """One TaskResult per shot count (and category), identical on every rank."""
    task = build_task(config, tokenizer)
    groups = agree_on_errors(lambda: load_records(task), info)  # a file one rank cannot read stops every rank
    results = []
    for num_fewshot in config.num_fewshot:
        for category, records in groups.items():
            examples = task.examples(records, num_fewshot, config.dataset_uri)
            mine = examples[info.rank::info.world_size]
            if subset_num_batches is not None:
                mine = mine[:subset_num_batches * config.batch_size]
            metrics = build_metrics(task)
            # agreed before any forward: once a rank runs out of batches, the others must not still be gathering
            _forward_in_lockstep(model, _passes(task, mine), info, precision)
            _score(model, tokenizer, task, mine, metrics, info.device, precision)
            for metric in metrics.values():
                metric.sync(info.device)
            size = int(next(iter(metrics.values())).total)
            results.append(TaskResult(config.label, num_fewshot, category,
                                      {name: metric.compute() for name, metric in metrics.items()}, size))
    return results


def _forward_in_lockstep(model: nn.Module, passes: int, info: DistInfo, precision: str) -> None:
    """An FSDP2 model gathers its parameters from every rank in each forward pass: a rank with fewer batches to
    score than another first runs one-token passes (their output unused), so every rank runs as many."""
    token = torch.zeros((1, 1), dtype=torch.long, device=info.device)
    for _ in range(lockstep_count(model, passes, info.device) - passes):
        with precision_context(precision, info.device):
            model(input_ids=token, attention_mask=torch.ones_like(token, dtype=torch.bool))


def _passes(task: IclTask, examples: list[Any]) -> int:
    """The forward passes `_score` runs for `examples` (0 for generation: generate_answers agrees on its own)."""
    if task.kind in ('generation', 'code'):
        return 0
    requests = sum(len(e.requests) if isinstance(e, Choices) else 1 for e in examples)
    return -(-requests // task.config.batch_size)  # continuation_logits' batches


def _generate(model: nn.Module, tokenizer: PreTrainedTokenizerBase, config: IclTaskConfig, contexts: list[list[int]],
              defaults: dict[str, Any], device: torch.device, precision: str) -> list[str]:
    """generate_answers for `contexts` with the task's generation_kwargs over `defaults` (max_new_tokens included);
    in lockstep itself when the model is sharded."""
    kwargs = {**defaults, **(config.generation_kwargs or {})}
    max_new_tokens = kwargs.pop('max_new_tokens')
    return generate_answers(model, tokenizer, contexts, batch_size=config.batch_size, max_new_tokens=max_new_tokens,
                            stop_sequences=config.early_stopping_criteria, generation_kwargs=kwargs, device=device,
                            precision=precision)


def _score_code(model: nn.Module, tokenizer: PreTrainedTokenizerBase, task: CodeEvalTask, problems: list[CodeProblem],
                metrics: dict[str, InContextLearningMetric], device: torch.device, precision: str) -> None:
    """generations_per_sample independent samples per problem (llm-foundry's defaults: sampling at temperature 0.2),
    each run against the problem's tests."""
    n = task.config.generations_per_sample
    defaults = {'do_sample': True, 'temperature': 0.2, 'max_new_tokens': task.max_new_tokens()}
    outputs = _generate(model, tokenizer, task.config, [problem.context for problem in problems for _ in range(n)],
                        defaults, device, precision)
    for index, problem in enumerate(problems):
        for metric in metrics.values():
            metric.update(outputs[index * n:(index + 1) * n], problem, task.config.pass_at_k)


def _score(model: nn.Module, tokenizer: PreTrainedTokenizerBase, task: IclTask, examples: list[Any],
           metrics: dict[str, InContextLearningMetric], device: torch.device, precision: str) -> None:
    """Score `examples` into `metrics`."""
    config = task.config
    if task.kind == 'code':
        _score_code(model, tokenizer, task, examples, metrics, device, precision)
        return
    if task.kind == 'generation':
        outputs = _generate(model, tokenizer, config, [prompt.context for prompt in examples],
                            {'max_new_tokens': max(task.max_answer_tokens, 1)}, device, precision)
        for prompt, output in zip(examples, outputs):
            for metric in metrics.values():
                metric.update(output, prompt.labels, stop_sequences=config.early_stopping_criteria,
                              cot_delimiter=config.cot_delimiter, do_normalization=config.do_normalization)
        return
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    requests: list[Request] = []
    for example in examples:
        requests.extend(example.requests if isinstance(example, Choices) else [example])
    logits = iter(continuation_logits(model, requests, config.batch_size, pad_id, device, precision))
    for example in examples:
        if isinstance(example, Choices):
            scored = [(next(logits), torch.tensor(r.continuation)) for r in example.requests]
            for metric in metrics.values():
                metric.update(scored, example.gold)
        else:
            targets = torch.tensor(example.continuation)
            step = next(logits)
            for metric in metrics.values():
                metric.update(step, targets)
