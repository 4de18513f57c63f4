"""`--dry-run`: everything a run would check and build, short of training, in one process; nothing is written.

In order: code_paths, every path and the tokenizer (setup.check_inputs: a wrong path fails here, before any
model exists); the layout on the planned world size; the model on the meta device (no memory, no weights),
with its parameter count and training FLOPs per token; the first batch of the train loader and its shapes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.validation import ConfigError
from llmfoundry.interfaces import DistInfo
from llmfoundry.models.accounting import count_parameters, flops_per_token
from llmfoundry.models.builders import build_model
from llmfoundry.models.mpt import MPTConfig

from .loaders import build_loader, loader_sections
from .plan import plan_layout
from .preflight import run_folder_for
from .setup import build_evaluators, check_inputs

# The world a launcher describes: a dry run is one process whatever the launcher said.
LAUNCHER_VARIABLES = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'NODE_RANK', 'GROUP_RANK')


def dry_run(config: TrainConfig, world_size: int, say: Callable[[str], None] = print) -> None:
    """Check and describe `config` as it would run on `world_size` ranks; ConfigError on the first problem."""
    with _one_process():
        _check_and_describe(config, world_size, say)


@contextlib.contextmanager
def _one_process() -> Iterator[None]:
    """Hide the launcher's variables meanwhile: the data loader would otherwise wait for the other ranks."""
    saved = {name: os.environ.pop(name) for name in LAUNCHER_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _check_and_describe(config: TrainConfig, world_size: int, say: Callable[[str], None]) -> None:
    run_name = config.run_name or os.environ.get('RUN_NAME') or '{run_name}'  # a real run picks a timestamped name
    tokenizer = check_inputs(config, run_name)
    build_evaluators(config, tokenizer, DistInfo(0, world_size, 0, torch.device('cpu')))  # ICL task files
    loaders = ', '.join(path for path, _ in loader_sections(config))
    say(f'checked: data of {loaders}; load_path {config.load_path or "not set"}; run folder '
        f'{run_folder_for(config, run_name)} writable; tokenizer {config.tokenizer["name"]} '
        f'({len(tokenizer):,} tokens)')
    layout = plan_layout(config, world_size)
    model = build_on_meta(config.model)
    say(f'model: {config.model.get("name")}, {count_parameters(model):,} parameters (built on the meta device)')
    if isinstance(getattr(model, 'config', None), MPTConfig):
        flops = flops_per_token(model.config, config.max_seq_len)
        say(f'FLOPs per token: {flops:,.0f} ({flops:.3e}; training, forward + backward, at max_seq_len '
            f'{config.max_seq_len})')
    where = ('this process; --nproc N or WORLD_SIZE=N shows N ranks' if world_size == 1
             else f'each of {world_size} ranks')
    say(f'world size: {world_size} (layout for {where})')
    for line in layout.describe():
        say(line)
    batch = first_batch(config.train_loader, tokenizer, layout.device_batch)
    shapes = ', '.join(f'{key} {tuple(value.shape)} {str(value.dtype).removeprefix("torch.")}'
                       for key, value in batch.items())
    say(f'first batch (one device): {shapes}')
    say('dry run OK: nothing was trained or written.')


def build_on_meta(section: dict[str, Any]) -> nn.Module:
    """The model of a `model:` section with every parameter on the meta device (no memory, no weights read)."""
    section = dict(section)
    if section.get('name') == 'mpt_causal_lm':
        section['init_device'] = 'meta'
    if section.get('name') == 'hf_causal_lm':
        section['pretrained'] = False  # the architecture only: weights are not read
    with torch.device('meta'):
        return build_model(section)


def first_batch(section: dict[str, Any], tokenizer: Any, batch_size: int) -> dict[str, torch.Tensor]:
    """The train loader's first batch, read in this process (no workers); a remote is cached in a temporary
    folder that is removed afterwards."""
    section = {k: v for k, v in section.items() if k not in ('prefetch_factor', 'persistent_workers')}
    section['num_workers'] = 0
    with tempfile.TemporaryDirectory(prefix='llmfoundry-dry-run-') as cache:
        section['dataset'] = _with_temporary_caches(dict(section.get('dataset') or {}), cache)
        loader = build_loader(section, tokenizer, batch_size, 'train_loader')
        batch = next(iter(loader), None)
        del loader
    if batch is None:  # a real run would stop at once having trained nothing
        raise ConfigError(f'train_loader yields no batch of {batch_size} rows: the dataset is smaller than one batch '
                          '(after packing, and with drop_last); use more data or a smaller global_train_batch_size')
    return batch


def _with_temporary_caches(dataset: dict[str, Any], cache: str) -> dict[str, Any]:
    """Every `local` that caches a `remote` moved under `cache`, so streaming downloads nothing permanent."""
    if dataset.get('remote'):
        dataset['local'] = os.path.join(cache, 'dataset')
    streams = dataset.get('streams')
    if isinstance(streams, dict):
        dataset['streams'] = {
            name: {**cfg, 'local': os.path.join(cache, name)} if isinstance(cfg, dict) and cfg.get('remote') else cfg
            for name, cfg in streams.items()
        }
    return dataset
