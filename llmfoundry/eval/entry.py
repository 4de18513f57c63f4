"""One evaluation on one rank: `python scripts/eval/eval.py YAML [key=value ...]`, also under torchrun or
`llmfoundry eval --nproc N`. Every rank scores its share of each ICL task and of each eval loader (plain LM loss);
rank 0 prints and writes the results. With fsdp_config the model is sharded over the ranks (FSDP2), which then
run every forward pass together."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import load as safetensors_load
from torch import nn
from torch.distributed.checkpoint.state_dict import get_model_state_dict
from torch.distributed.tensor import DTensor
from transformers import PreTrainedTokenizerBase

from llmfoundry import storage
from llmfoundry.config.schema import FSDPConfig
from llmfoundry.config.time import Timestamp
from llmfoundry.config.validation import ConfigError
from llmfoundry.export import load_model
from llmfoundry.interfaces import DistInfo, LoggerDestination
from llmfoundry.models.builders import build_model
from llmfoundry.registry import loggers
from llmfoundry.train import checkpoint
from llmfoundry.train.checkpoint.resume import resolve_load_path
from llmfoundry.train.distributed import agree_on_errors, init_distributed, shutdown
from llmfoundry.train.jsonl import JSONLLogger
from llmfoundry.train.loaders import build_loader, eval_sections
from llmfoundry.train.logs import configure_logging
from llmfoundry.train.loss_eval import evaluate_loss, model_inputs, takes_sequence_id
from llmfoundry.train.parallel import build_mesh, local_part, materialise, parallelize
from llmfoundry.train.preflight import load_tokenizer
from llmfoundry.train.setup import agree_on_run_name, seed_everything

from .config import Evaluation, ModelEntry, load_eval_config
from .report import gauntlet_table, icl_metrics, loss_table, results_table
from .runner import TaskResult, evaluate_task
from .scoring import precision_context

log = logging.getLogger(__name__)

CONFIG_ERROR_EXIT = 2


def build_eval_model(entry: ModelEntry, info: DistInfo, fsdp_config: FSDPConfig | None = None,
                     precision: str = 'fp32', run_name: str = '') -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """The entry's model in eval mode on this rank's device (its load_path weights when given) and its tokenizer.
    With `fsdp_config` and several ranks the model is sharded as training shards it (train/parallel.py)."""
    tokenizer = load_tokenizer(entry.tokenizer)
    model = build_model(entry.model)
    if fsdp_config is None:
        materialise(model, info.device)
    else:
        mesh = build_mesh(fsdp_config, info.world_size, info.device.type) if info.world_size > 1 else None
        parallelize(model, fsdp_config, mesh, None, precision, info.device)
    if entry.load_path:
        try:
            load_weights(model, entry.load_path, info, run_name)
        except (checkpoint.CheckpointError, OSError, ValueError, RuntimeError) as error:
            raise ConfigError(f'load_path={entry.load_path!r} (model {entry.model_name!r}): {error}') from error
    return model.eval(), tokenizer


def load_weights(model: nn.Module, load_path: str, info: DistInfo, run_name: str = '') -> None:
    """Load the weights `load_path` names into `model` (sharded or not): a checkpoint folder of ours or Composer's
    (DCP reshards it), a run's save_folder or `.../latest` (its newest checkpoint), a consolidated
    `model.safetensors` (fsdp_config.state_dict_type: full), or a Hugging Face folder `llmfoundry convert from-hf`
    reads. Every parameter must be found (strict)."""
    def newest(folder: str) -> str | None:  # rank 0 picks it for every rank
        return checkpoint.find_latest(folder, rank=info.rank, world_size=info.world_size)

    path = resolve_load_path(load_path, run_name, newest)
    if path.endswith('.safetensors'):
        full = safetensors_load(storage.read_bytes(path))
    elif not checkpoint.is_training_checkpoint(path) and storage.exists(storage.join(path, 'config.json')):
        full = load_model(path).state_dict()
    else:
        checkpoint.load(path, model, weights_only=True, rank=info.rank, world_size=info.world_size)
        return
    _load_full_weights(model, full, path)


@torch.no_grad()
def _load_full_weights(model: nn.Module, full: dict[str, torch.Tensor], where: str) -> None:
    """Copy full (unsharded) weights into `model`, each rank keeping only its own shard: every rank read the whole
    file, so no communication is needed (and a rank's error cannot leave another in a collective)."""
    current = get_model_state_dict(model)
    missing, unexpected = sorted(current.keys() - full.keys()), sorted(full.keys() - current.keys())
    if missing or unexpected:
        raise ValueError(f'the weights in {where} do not fit the model section: missing {missing or "none"}, '
                         f'unexpected {unexpected or "none"}')
    for name, param in current.items():
        local = param.to_local() if isinstance(param, DTensor) else param
        if tuple(full[name].shape) != tuple(param.shape):
            raise ValueError(f'{where}: {name} has shape {tuple(full[name].shape)}, the model {tuple(param.shape)}')
        local.copy_(local_part(full[name].to(device=local.device, dtype=local.dtype), param))


def evaluate_model(evaluation: Evaluation, model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                   info: DistInfo) -> list[TaskResult]:
    """Every ICL task of the evaluation on this model; identical results on every rank."""
    results = []
    for task in evaluation.tasks:
        results += evaluate_task(model, tokenizer, task, info, evaluation.config.precision,
                                 evaluation.config.icl_subset_num_batches)
    return results


def evaluate_lm_loss(evaluation: Evaluation, model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                     info: DistInfo) -> dict[str, float]:
    """The eval loaders' LanguageCrossEntropy, LanguagePerplexity and TokenAccuracy, named as training logs them
    (`metrics/eval/...`); identical on every rank. Empty without eval_loader(s)."""
    config = evaluation.config
    loaders = [(label, build_loader(section, tokenizer, config.device_eval_batch_size, path))
               for label, path, section in eval_sections(config)]  # type: ignore[arg-type]  # reads the two keys

    sequence_id = takes_sequence_id(model)

    def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with precision_context(config.precision, info.device):
            return model(**model_inputs(batch, sequence_id)).logits

    return evaluate_loss(forward, loaders, info.device, config.eval_subset_num_batches) if loaders else {}


def model_metrics(evaluation: Evaluation, results: list[TaskResult]) -> dict[str, float]:
    """The record metrics.jsonl gets for one model: every metric, then the gauntlet scores."""
    return icl_metrics(results, evaluation.gauntlet)


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
            build = functools.partial(build_eval_model, entry, info, evaluation.config.fsdp_config,
                                      evaluation.config.precision, run_name)
            model, tokenizer = agree_on_errors(build, info)
            results = evaluate_model(evaluation, model, tokenizer, info)
            losses = evaluate_lm_loss(evaluation, model, tokenizer, info)
            metrics = everything[entry.model_name] = {**losses, **model_metrics(evaluation, results)}
            if info.rank == 0:
                tables = [results_table(results, entry.model_name, evaluation.gauntlet)] if results else []
                tables += [loss_table(losses, entry.model_name)] if losses else []
                print(f'Results for {entry.model_name}:\n' + '\n\n'.join(tables) + '\n', flush=True)
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
    parser = argparse.ArgumentParser(prog='eval.py',
                                     description='Evaluate models on ICL tasks and eval loaders (llm-foundry YAML).')
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
