"""Checks before a run builds anything: every path it reads or writes, the tokenizer, and that the hardware
can train at the config's precision (amp_fp8).

A wrong path then fails in one line that names its config key, before a model is built or materialised and
before anything is written (run folder, config.yaml, metrics.jsonl). Nothing is created by these checks.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from llmfoundry import storage
from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.validation import ConfigError, check_keys
from llmfoundry.data.finetuning.preflight import check_finetuning_data, check_packing_model
from llmfoundry.data.text_loader import check_local_data
from llmfoundry.data.tokenizers import build_tokenizer

from .checkpoint import check_load_path
from .float8 import float8_hardware_problem
from .loaders import loader_sections

TOKENIZER_KEYS = ('name', 'kwargs')


def run_folder_for(config: TrainConfig, run_name: str) -> Path:
    """Always local: save_folder when it is a local path, else runs/{run_name}."""
    folder = config.save_folder
    if folder and not storage.is_remote(folder):
        return Path(folder.removeprefix('file://').format(run_name=run_name))
    return Path('runs') / run_name


def check_paths(config: TrainConfig, run_name: str) -> None:
    """Data folders (or a remote to stream from), load_path, and the local folder the run writes to; every URL's
    scheme is supported and its package installed (the tokenizer's, save_folder's, hf_checkpointer's too)."""
    tokenizer = str(config.tokenizer.get('name', 'YOUR_TOKENIZER'))
    for key, url in remote_locations(config):
        check_location(url, key)
    for path, section in loader_sections(config):
        name = section.get('name', 'text')
        if name == 'text':
            check_local_data(section, path, tokenizer)
        elif name == 'finetuning':
            check_finetuning_data(section, path, tokenizer)
            if int(os.environ.get('RANK', '0')) == 0:  # every rank runs these checks; one says the warning
                check_packing_model(section, config.model, path)
    if config.load_path:
        check_load_path(config.load_path, run_name)
    local_save = config.save_folder and not storage.is_remote(config.save_folder)
    check_writable(run_folder_for(config, run_name), 'save_folder' if local_save else 'run folder')


def check_precision(config: TrainConfig, device: torch.device) -> None:
    """precision: amp_fp8 needs torchao and a GPU with float8 tensor cores (train/float8.py); fp8_config needs
    amp_fp8, and its float8 all-gather needs fsdp_config."""
    if config.precision != 'amp_fp8':
        if config.fp8_config is not None:
            raise ConfigError(f'fp8_config is set but precision is {config.precision}: set precision: amp_fp8, or '
                              'remove fp8_config.')
        return
    if config.fp8_config and config.fp8_config.enable_fsdp_float8_all_gather and config.fsdp_config is None:
        raise ConfigError('fp8_config.enable_fsdp_float8_all_gather: true needs fsdp_config (FSDP2 does the '
                          'all-gather); add fsdp_config or remove the key.')
    problem = float8_hardware_problem(device)
    if problem:
        raise ConfigError(f'precision: amp_fp8 needs an NVIDIA GPU with float8 tensor cores (compute capability 8.9 '
                          f'or newer: Ada, Hopper, Blackwell); {problem}. Use precision: amp_bf16 here.')
    if importlib.util.find_spec('torchao') is None:
        raise ConfigError("precision: amp_fp8 trains with torchao, which is not installed: pip install "
                          "'llmfoundry[float8]' (or use precision: amp_bf16).")


def remote_locations(config: TrainConfig) -> list[tuple[str, str]]:
    """(config key, URL) for each location outside this machine the run reads or writes through storage.py."""
    hf_checkpointer = (config.callbacks or {}).get('hf_checkpointer') or {}
    found = [('load_path', config.load_path), ('save_folder', config.save_folder),
             ('tokenizer.name', config.tokenizer.get('name')),
             ('callbacks.hf_checkpointer.save_folder', hf_checkpointer.get('save_folder'))]
    return [(key, str(url)) for key, url in found if url and storage.is_remote(str(url))]


def check_location(url: str, key: str) -> None:
    """ConfigError naming `key` for a URL whose scheme is unknown or whose fsspec package is not installed."""
    try:
        storage.check_supported(url, key)
    except storage.StorageError as error:
        raise ConfigError(str(error)) from error


def check_writable(folder: Path, key: str) -> None:
    """`folder` exists as a writable folder or can be created (its nearest existing parent is writable)."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f'{key}={str(folder)!r}: {existing} is a file, not a folder.')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f'{key}={str(folder)!r}: {existing} is not writable by this user; choose another folder.')


def load_tokenizer(section: dict[str, Any]) -> PreTrainedTokenizerBase:
    """The `tokenizer:` section ({name, kwargs}) loaded; a missing folder or hub name is a ConfigError."""
    check_keys(section, TOKENIZER_KEYS, 'tokenizer')
    if not section.get('name'):
        raise ConfigError('tokenizer.name is required: a local tokenizer folder or a Hugging Face hub name.')
    try:
        return build_tokenizer(section['name'], section.get('kwargs'))
    except (OSError, ValueError) as error:
        raise ConfigError(f"tokenizer.name={section['name']!r}: {error}") from error
