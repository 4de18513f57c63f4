"""One evaluation on one rank: `python scripts/eval/eval.py YAML [key=value ...]`, also under torchrun or
`llmfoundry eval --nproc N`. Every rank scores its share of each task; rank 0 prints and writes the results."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn
from transformers import PreTrainedTokenizerBase

from llmfoundry.config.time import Timestamp
from llmfoundry.config.validation import ConfigError
from llmfoundry.interfaces import DistInfo, LoggerDestination
from llmfoundry.models.builders import build_model
from llmfoundry.registry import loggers
from llmfoundry.train import checkpoint
from llmfoundry.train.distributed import agree_on_errors, init_distributed, shutdown
from llmfoundry.train.jsonl import JSONLLogger
from llmfoundry.train.logs import configure_logging
from llmfoundry.train.parallel import materialise
from llmfoundry.train.preflight import load_tokenizer
from llmfoundry.train.setup import agree_on_run_name, seed_everything

from .config import Evaluation, ModelEntry, load_eval_config
from .gauntlet import gauntlet_scores
from .report import accuracy_pairs, gauntlet_table, metric_names, results_table
from .runner import TaskResult, evaluate_task

log = logging.getLogger(__name__)

CONFIG_ERROR_EXIT = 2


def build_eval_model(entry: ModelEntry, device: torch.device) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """The entry's model on `device` in eval mode (its load_path weights when given) and its tokenizer."""
    tokenizer = load_tokenizer(entry.tokenizer)
    model = materialise(build_model(entry.model), device)
    if entry.load_path:
        checkpoint.load(entry.load_path, model, weights_only=True)
    return model.eval(), tokenizer


def evaluate_model(evaluation: Evaluation, model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                   info: DistInfo) -> list[TaskResult]:
    """Every ICL task of the evaluation on this model; identical results on every rank."""
    results = []
    for task in evaluation.tasks:
        results += evaluate_task(model, tokenizer, task, info, evaluation.config.precision,
                                 evaluation.config.icl_subset_num_batches)
    return results


def model_metrics(evaluation: Evaluation, results: list[TaskResult]) -> dict[str, float]:
    """The record metrics.jsonl gets for one model: every metric, then the gauntlet scores."""
    metrics = metric_names(results)
    if evaluation.gauntlet is not None:
        sizes = {r.name: r.size for r in results}
        metrics.update(gauntlet_scores(evaluation.gauntlet, accuracy_pairs(results), sizes))
    return metrics


def _destinations(evaluation: Evaluation, run_folder: Path, run_name: str) -> list[LoggerDestination]:
    built: list[LoggerDestination] = [JSONLLogger(run_folder / 'metrics.jsonl')]
    for name, kwargs in (evaluation.config.loggers or {}).items():
        built.append(loggers.build(name, kwargs, f'loggers.{name}', run_folder=run_folder, default_name=run_name))
    return built


def run(evaluation: Evaluation, resolved: dict[str, Any], info: DistInfo) -> dict[str, dict[str, float]]:
    """Evaluate every model; rank 0 prints the tables and writes runs/{run_name}. Returns model -> metrics."""
    seed_everything(evaluation.config.seed)
    run_name = agree_on_run_name(evaluation.config)  # type: ignore[arg-type]  # reads only .run_name
    run_folder = Path('runs') / run_name
    destinations: list[LoggerDestination] = []
    if info.rank == 0:
        run_folder.mkdir(parents=True, exist_ok=True)
        (run_folder / 'config.yaml').write_text(OmegaConf.to_yaml(resolved), encoding='utf-8')
        destinations = _destinations(evaluation, run_folder, run_name)
        if evaluation.config.log_config:
            for destination in destinations:
                destination.log_hyperparameters(resolved)
    everything: dict[str, dict[str, float]] = {}
    try:
        for entry in evaluation.models:
            model, tokenizer = agree_on_errors(functools.partial(build_eval_model, entry, info.device), info)
            results = evaluate_model(evaluation, model, tokenizer, info)
            metrics = everything[entry.model_name] = model_metrics(evaluation, results)
            if info.rank == 0:
                print(f'Results for {entry.model_name}:\n'
                      f'{results_table(results, entry.model_name, evaluation.gauntlet)}\n', flush=True)
                for destination in destinations:
                    destination.log_metrics({**metrics, 'model_name': entry.model_name}, Timestamp())
            del model
        if info.rank == 0 and evaluation.gauntlet is not None:
            print(f'Eval gauntlet:\n{gauntlet_table(everything, evaluation.gauntlet)}\n', flush=True)
    finally:
        for destination in destinations:
            destination.close()
    return everything


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='eval.py', description='Evaluate models on ICL tasks (llm-foundry YAML).')
    parser.add_argument('yaml')
    parser.add_argument('overrides', nargs='*', help='key.subkey=value overrides')
    args = parser.parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    info = None
    try:
        evaluation, resolved = load_eval_config(args.yaml, args.overrides)
        info = init_distributed(evaluation.config.dist_timeout)
        configure_logging(evaluation.config.python_log_level, info.rank, info.world_size)
        run(evaluation, resolved, info)
    except ConfigError as error:
        if info is None or info.rank == 0:
            print(f'Config error: {error}', file=sys.stderr, flush=True)
        shutdown()
        return CONFIG_ERROR_EXIT
    shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
