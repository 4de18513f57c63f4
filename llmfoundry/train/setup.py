"""Build everything a run needs from a validated config: seed, tokenizer, model, loaders, optimizer,
callbacks, loggers and the run folder; then hand them to the Trainer."""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch import nn
from transformers import PreTrainedTokenizerBase

from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.time import Time
from llmfoundry.config.validation import ConfigError
from llmfoundry.models.registry import build_model
from llmfoundry.optim.optimizers import build_optimizer

from .checkpointing import CheckpointSaver, resume
from .distributed import DistInfo, agree_on_errors
from .events import Callback, LoggerDestination, MetricLogger, TrainState, callbacks, loggers
from .loaders import build_loader, eval_sections
from .parallel import build_mesh, materialise_sharded, parallelize
from .plan import device_batch_sizes
from .preflight import check_paths, load_tokenizer
from .trainer import Trainer, run_folder_for

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def agree_on_run_name(config: TrainConfig) -> str:
    """config.run_name, else $RUN_NAME, else a timestamped name chosen by rank 0 and shared."""
    name = [config.run_name or os.environ.get('RUN_NAME') or time.strftime('llmfoundry-%Y%m%d-%H%M%S')]
    if dist.is_initialized():
        dist.broadcast_object_list(name, src=0)
    return name[0]


def materialise(model: nn.Module, device: torch.device) -> nn.Module:
    """Move to `device`; a model built on the meta device is allocated there and initialised deterministically."""
    if any(p.is_meta for p in model.parameters()):
        model.to_empty(device=device)
        model.reset_parameters()
        return model
    return model.to(device)


def build_callbacks(section: dict[str, Any] | None) -> list[Callback]:
    import llmfoundry.callbacks  # noqa: F401  (registers the built-in callbacks)

    return [callbacks.build(name, kwargs, path=f'callbacks.{name}') for name, kwargs in (section or {}).items()]


def build_loggers(config: TrainConfig, run_folder: Path, run_name: str, max_duration: Time) -> list[LoggerDestination]:
    import llmfoundry.loggers  # noqa: F401  (registers the built-in loggers)
    from llmfoundry.loggers.console import ConsoleLogger
    from llmfoundry.loggers.jsonl import JSONLLogger

    built: list[LoggerDestination] = [JSONLLogger(run_folder / 'metrics.jsonl')]
    if config.log_to_console:
        built.append(ConsoleLogger(interval=Time.parse(config.console_log_interval, 'console_log_interval'),
                                   progress_bar=config.progress_bar, max_duration=max_duration))
    for name, kwargs in (config.loggers or {}).items():
        built.append(loggers.build(name, kwargs, path=f'loggers.{name}', run_folder=run_folder, default_name=run_name))
    return built


def import_code_paths(paths: list[str] | None) -> None:
    """llm-foundry's code_paths: Python files imported before anything is built, so they can register plugins."""
    for index, path in enumerate(paths or []):
        if not Path(path).is_file():
            raise ConfigError(f'code_paths[{index}]={path!r} is not a file.')
        spec = importlib.util.spec_from_file_location(f'llmfoundry_user_code_{index}', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


def compile_blocks(model: nn.Module, compile_config: dict[str, Any] | None) -> None:
    """compile_config: torch.compile each transformer block in place (the whole model when it has no blocks)."""
    if compile_config is None:
        return
    blocks = getattr(getattr(model, 'transformer', None), 'blocks', None)
    for module in blocks if blocks is not None else [model]:
        module.compile(**compile_config)


def prepare_model(config: TrainConfig, info: DistInfo) -> nn.Module:
    """Build the model, then either place it (no fsdp_config) or shard it with FSDP2 (parallel.py).

    A model built on the meta device is initialised after placement/sharding from per-parameter seeds, so
    its weights do not depend on the world size and no rank ever holds the full model.
    """
    model = build_model(config.model)
    fsdp = config.fsdp_config
    if fsdp is None:
        model = materialise(model, info.device)
        compile_blocks(model, config.compile_config)
        return model
    on_meta = any(p.is_meta for p in model.parameters())
    home = torch.device('cpu') if fsdp.cpu_offload else info.device
    if not on_meta:
        model.to(home)
    mesh = build_mesh(fsdp, info.world_size, info.device.type) if info.world_size > 1 else None
    parallelize(model, fsdp, mesh, config.compile_config, precision=config.precision)
    if on_meta:
        materialise_sharded(model, home)
    return model


def check_inputs(config: TrainConfig, run_name: str) -> PreTrainedTokenizerBase:
    """What can fail before anything is built, each failure a ConfigError: code_paths are imported, every path
    is checked (preflight.py) and the tokenizer is loaded (and returned)."""
    import_code_paths(config.code_paths)
    check_paths(config, run_name)
    return load_tokenizer(config.tokenizer)


def build_trainer(config: TrainConfig, resolved: dict[str, Any], info: DistInfo) -> Trainer:
    run_name = agree_on_run_name(config)
    tokenizer = agree_on_errors(lambda: check_inputs(config, run_name), info)
    seed_everything(config.seed)
    run_folder = run_folder_for(config, run_name)
    max_duration = Time.parse(config.max_duration, 'max_duration')
    device_batch, micro = device_batch_sizes(config, info.world_size)

    model = prepare_model(config, info)
    if micro == 'auto':
        micro = auto_microbatch_size(model, device_batch, config.max_seq_len, info)
    train_loader = build_loader(config.train_loader, tokenizer, device_batch, 'train_loader')
    eval_loaders = [(label, build_loader(section, tokenizer, config.device_eval_batch_size, path))
                    for label, path, section in eval_sections(config)]
    optimizer = build_optimizer(config.optimizer, model)

    config_yaml = OmegaConf.to_yaml(OmegaConf.create(resolved))
    if info.is_main:
        run_folder.mkdir(parents=True, exist_ok=True)
        (run_folder / 'config.yaml').write_text(config_yaml)
        if config.log_config:
            log.info('Resolved config:\n%s', config_yaml)
    destinations = build_loggers(config, run_folder, run_name, max_duration) if info.is_main else []
    logger = MetricLogger(destinations, info.is_main)
    logger.log_hyperparameters(resolved)
    state = TrainState(
        config=config, model=model, optimizer=optimizer, dist=info, max_duration=max_duration, run_name=run_name,
        run_folder=run_folder, device_train_batch_size=device_batch, microbatch_size=micro, tokenizer=tokenizer,
    )
    resumed_from = resume(config, state, train_loader)
    saver = CheckpointSaver(config, run_name, config_yaml) if config.save_folder else None
    if saver and resumed_from and config.autoresume:
        saver.last_saved = state.timestamp  # a restart after the end must not re-save the final checkpoint
        saver.last_path = resumed_from
    return Trainer(config, state, train_loader, eval_loaders, build_callbacks(config.callbacks), logger, saver)


def auto_microbatch_size(model: nn.Module, device_batch: int, seq_len: int, info: DistInfo) -> int:
    """device_train_microbatch_size: auto. On CUDA, the largest size (halving from the device batch) whose
    forward+backward at max_seq_len fits, agreed across ranks (the minimum); on CPU, the whole device batch."""
    if info.device.type != 'cuda':
        log.info('device_train_microbatch_size: auto on %s: the whole device batch (%d).', info.device, device_batch)
        return device_batch
    vocab = model.get_input_embeddings().num_embeddings

    def try_size(size: int) -> None:
        try:
            ids = torch.randint(0, vocab, (size, seq_len), device=info.device)
            model(input_ids=ids).logits.float().mean().backward()
        finally:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()

    size = largest_fitting_microbatch(try_size, device_batch)
    if dist.is_initialized():
        agreed = torch.tensor([size], device=info.device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
        size = int(agreed)
    log.info('device_train_microbatch_size: auto chose %d', size)
    return size


def largest_fitting_microbatch(try_size: Callable[[int], None], start: int) -> int:
    """Halve from `start` until `try_size` runs without a CUDA out-of-memory error (each halving is logged)."""
    size = start
    while True:
        try:
            try_size(size)
            return size
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            size //= 2
            log.warning('device_train_microbatch_size: auto: out of memory, trying %d', size)
