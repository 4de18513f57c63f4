"""Build everything a run needs from a validated config: seed, tokenizer, model and its parallelism (parallel.py),
loaders, optimizer, LR schedule, gradient clipping, intervals, callbacks, loggers and the run folder; then hand them,
built, to the Trainer, which only runs the loop."""

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
from torch.distributed.fsdp import FSDPModule
from transformers import PreTrainedTokenizerBase

from llmfoundry.config.metadata import logged_config
from llmfoundry.config.no_op import warn_no_op_keys
from llmfoundry.config.schema import FSDPConfig, TrainConfig
from llmfoundry.config.time import Time
from llmfoundry.config.validation import ConfigError
from llmfoundry.interfaces import Callback, DistInfo, LoggerDestination, MetricLogger, TrainState
from llmfoundry.models.builders import build_model
from llmfoundry.optim.optimizers import build_optimizer
from llmfoundry.optim.schedulers import build_scheduler
from llmfoundry.registry import callbacks, evaluators, loggers

from .algorithms import build_gradient_clipping
from .checkpoint import CheckpointSaver, resume
from .console import ConsoleLogger
from .distributed import agree_on_errors
from .float8 import convert_model
from .jsonl import JSONLLogger
from .loaders import build_loader, eval_sections
from .parallel import build_mesh, parallelize, unwrapped_name
from .plan import device_batch_sizes
from .preflight import check_paths, check_precision, load_tokenizer, run_folder_for
from .profiler import build_profiler
from .trainer import Trainer

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


def build_callbacks(section: dict[str, Any] | None) -> list[Callback]:
    """`callbacks: {name: kwargs}`, each from the callbacks registry."""
    return [callbacks.build(name, kwargs, f'callbacks.{name}') for name, kwargs in (section or {}).items()]


def build_evaluators(config: TrainConfig, tokenizer: PreTrainedTokenizerBase,
                     info: DistInfo) -> list[Callable[[nn.Module], dict[str, float]]]:
    """What every evaluation runs besides the eval loaders: the ICL tasks and gauntlet when icl_tasks is set
    (registered in `evaluators` and built by eval/, which reads and checks every task file here)."""
    if config.icl_tasks is None and config.icl_tasks_str is None:
        return []
    return [evaluators.get('icl_tasks', 'icl_tasks')(config, tokenizer, info)]


def build_loggers(config: TrainConfig, run_folder: Path, run_name: str, max_duration: Time,
                  console_interval: Time) -> list[LoggerDestination]:
    """The run's metrics.jsonl, the console (log_to_console) and `loggers: {name: kwargs}` from the registry."""
    built: list[LoggerDestination] = [JSONLLogger(run_folder / 'metrics.jsonl')]
    if config.log_to_console:
        built.append(ConsoleLogger(interval=console_interval, progress_bar=config.progress_bar,
                                   max_duration=max_duration))
    for name, kwargs in (config.loggers or {}).items():
        built.append(loggers.build(name, kwargs, f'loggers.{name}', run_folder=run_folder, default_name=run_name))
    return built


def import_code_paths(paths: list[str] | None) -> None:
    """llm-foundry's code_paths: Python files imported before anything is built, so they can register plugins."""
    for index, path in enumerate(paths or []):
        if not Path(path).is_file():
            raise ConfigError(f'code_paths[{index}]={path!r} is not a file.')
        spec = importlib.util.spec_from_file_location(f'llmfoundry_user_code_{index}', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


def prepare_model(config: TrainConfig, info: DistInfo) -> tuple[nn.Module, nn.Module]:
    """Build the model and apply the run's parallelism (parallel.py: DDP, FSDP2 or one process); returns the model
    and the module training steps call (the model itself, or its DDP wrapper).

    A model built on the meta device is initialised after placement/sharding from per-parameter seeds, so
    its weights do not depend on the world size and no rank ever holds the full model.
    """
    model = build_model(config.model)
    convert_model(model, config)  # precision: amp_fp8: large Linear layers to float8, before parallelising
    mesh = build_mesh(config.fsdp_config, info.world_size, info.device.type) if info.world_size > 1 else None
    module = parallelize(model, config.fsdp_config, mesh, config.compile_config, config.precision, info.device)
    return model, module


def sharding_plan(model: nn.Module, fsdp: FSDPConfig) -> list[str]:
    """fsdp_config.verbose: one line for the policy, then one per fully_shard unit (outermost first) with the
    parameters it owns (those no inner unit took), the mesh they are sharded over and their placements."""
    units = [(name, module) for name, module in model.named_modules() if isinstance(module, FSDPModule)]
    if not units:
        return ['sharding plan: no module is sharded (one rank, or no fsdp_config)']
    lines, claimed = [], set()
    for name, module in reversed(units):  # innermost first, so each unit counts only what its sub-units did not take
        owned = [param for param in module.parameters() if id(param) not in claimed]
        claimed.update(id(param) for param in owned)
        lines.append(_unit_line(unwrapped_name(name) or '(root)', module, owned))
    policy = (f'sharding plan: {fsdp.sharding_strategy}, mixed_precision {fsdp.mixed_precision}, cpu_offload '
              f'{fsdp.cpu_offload}; {len(units)} fully_shard units')
    return [policy, *reversed(lines)]


def _unit_line(name: str, module: nn.Module, owned: list[nn.Parameter]) -> str:
    count = sum(param.numel() for param in owned)
    where = ''
    if owned and hasattr(owned[0], 'device_mesh'):  # DTensor: the mesh and how each dimension shards
        mesh = owned[0].device_mesh
        where = f' over mesh {dict(zip(mesh.mesh_dim_names or (), mesh.shape))} as {list(owned[0].placements)}'
    kind = type(module).__name__.removeprefix('FSDP')  # fully_shard renames the class FSDP<class>
    wrapped = getattr(module, '_checkpoint_wrapped_module', None)  # activation checkpointing's wrapper
    kind = f'{kind} of {type(wrapped).__name__}' if wrapped is not None else kind
    return f'  {name} ({kind}): {count:,} parameters{where}'


def check_inputs(config: TrainConfig, run_name: str) -> PreTrainedTokenizerBase:
    """What can fail before anything is built, each failure a ConfigError: code_paths are imported, every path
    is checked (preflight.py) and the tokenizer is loaded (and returned)."""
    import_code_paths(config.code_paths)
    check_paths(config, run_name)
    return load_tokenizer(config.tokenizer)


def build_trainer(config: TrainConfig, resolved: dict[str, Any], info: DistInfo) -> Trainer:
    """Everything the run needs, built in order (what can fail cheaply first), and the Trainer that runs it."""
    run_name = agree_on_run_name(config)
    hyperparameters = logged_config(config, resolved)
    if info.is_main:
        warn_no_op_keys(config)
    agree_on_errors(lambda: check_precision(config, info.device), info)  # amp_fp8's GPU, before any build
    tokenizer = agree_on_errors(lambda: check_inputs(config, run_name), info)
    extra_evaluators = agree_on_errors(lambda: build_evaluators(config, tokenizer, info), info)
    profiler = agree_on_errors(lambda: build_profiler(config.profiler, run_name, info, config.autoresume), info)
    seed_everything(config.seed)
    run_folder = run_folder_for(config, run_name)
    max_duration = Time.parse(config.max_duration, 'max_duration')
    eval_interval = Time.parse(config.eval_interval, 'eval_interval')
    console_interval = Time.parse(config.console_log_interval, 'console_log_interval')
    scheduler = build_scheduler(config.scheduler)
    clipping = build_gradient_clipping(config.algorithms)
    device_batch, micro = device_batch_sizes(config, info.world_size)

    model, module = prepare_model(config, info)
    if config.fsdp_config is not None and config.fsdp_config.verbose and info.is_main:
        log.info('\n'.join(sharding_plan(model, config.fsdp_config)))
    if micro == 'auto':  # the first steps probe: the trainer halves on out of memory (microbatch.py)
        log.info('device_train_microbatch_size: auto: starting with the device batch (%d)', device_batch)
        micro = device_batch
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
    destinations = build_loggers(config, run_folder, run_name, max_duration, console_interval) if info.is_main else []
    logger = MetricLogger(destinations, info.is_main)
    logger.log_hyperparameters(hyperparameters)
    state = TrainState(
        config=config, model=model, optimizer=optimizer, dist=info, max_duration=max_duration, run_name=run_name,
        run_folder=run_folder, device_train_batch_size=device_batch, microbatch_size=micro, tokenizer=tokenizer,
    )
    resumed_from = resume(config, state, train_loader)
    saver = CheckpointSaver(config, run_name, config_yaml) if config.save_folder else None
    if saver and resumed_from and config.autoresume:
        saver.last_saved = state.timestamp  # a restart after the end must not re-save the final checkpoint
        saver.last_path = resumed_from
    return Trainer(config, state, module=module, train_loader=train_loader, eval_loaders=eval_loaders,
                   callbacks=build_callbacks(config.callbacks) + profiler, logger=logger, scheduler=scheduler,
                   clipping=clipping, eval_interval=eval_interval, console_interval=console_interval, saver=saver,
                   evaluators=extra_evaluators)
