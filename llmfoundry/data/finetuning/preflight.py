"""Checks of a finetuning loader section before anything is built (train/preflight.py runs them on every rank).

A local data file, folder or MDS index that is missing fails in one line naming its config key; a packing loader
feeding an MPT model that ignores sequence_id is a warning, since llm-foundry accepts it.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Any

from llmfoundry import storage
from llmfoundry.config.validation import ConfigError
from llmfoundry.data.config_keys import to_plain
from llmfoundry.data.text_loader import check_local_data

log = logging.getLogger(__name__)

# `datasets` builders that read local files (data_files / data_dir) rather than a hub repository.
LOCAL_BUILDERS = ('json', 'csv', 'parquet', 'text', 'arrow')
# What hf_name looks like when it can only mean a local path (a hub name is `owner/name`).
LOCAL_PREFIXES = ('/', './', '../', '~')
FINETUNING_DATA_PREP = ('llmfoundry data-prep convert_finetuning_dataset --dataset json --data_files YOUR_FILE.jsonl '
                        '--splits {split} --out_root {local} --tokenizer {tokenizer} --max_seq_len {seq_len}')


def check_finetuning_data(loader_cfg: dict[str, Any], section: str, tokenizer: str = 'YOUR_TOKENIZER') -> None:
    """ConfigError naming the key of the first local input of a finetuning loader that does not exist: the MDS
    index (local/split) or, for `hf_name`, the local folder, `hf_kwargs.data_dir` and every `data_files` entry
    (resolved as `datasets` does: under data_dir, else under a local hf_name folder, else the working folder)."""
    dataset = to_plain(loader_cfg).get('dataset')
    if not isinstance(dataset, dict):
        return
    if dataset.get('hf_name') is None:
        if any(dataset.get(key) is not None for key in ('remote', 'local', 'streams')):
            check_local_data(loader_cfg, section, tokenizer, FINETUNING_DATA_PREP)
        return
    key, hf_name = f'{section}.dataset', os.path.expanduser(str(dataset['hf_name']))
    if storage.is_remote(hf_name):
        return  # the loader refuses it with its own message
    is_folder = os.path.isdir(hf_name)
    if not is_folder and hf_name.startswith(LOCAL_PREFIXES):
        raise ConfigError(f'{key}.hf_name={dataset["hf_name"]!r} does not exist (a local folder of data files, a '
                          f'builder such as json with hf_kwargs.data_files, or a hub dataset name)')
    if not (is_folder or hf_name in LOCAL_BUILDERS):
        return  # a hub dataset: its files are not local
    hf_kwargs = dataset.get('hf_kwargs') or {}
    base = hf_name if is_folder else '.'
    if hf_kwargs.get('data_dir'):
        base = os.path.join(base, os.path.expanduser(str(hf_kwargs['data_dir'])))
        if not os.path.isdir(base):
            raise ConfigError(f'{key}.hf_kwargs.data_dir={hf_kwargs["data_dir"]!r}: {base} is not a folder')
    for where, pattern in _data_files(hf_kwargs.get('data_files'), f'{key}.hf_kwargs.data_files'):
        if storage.is_remote(pattern):
            continue
        if not glob.glob(os.path.join(base, os.path.expanduser(pattern)), recursive=True):
            under = '' if base == '.' or os.path.isabs(pattern) else f' under {base}'
            raise ConfigError(f'{where}={pattern!r}: no such file{under}')


def _data_files(value: Any, key: str) -> list[tuple[str, str]]:
    """(config key, path or glob) of each entry of data_files: a string, a list, or split -> either."""
    if isinstance(value, dict):
        return [entry for split, files in value.items() for entry in _data_files(files, f'{key}.{split}')]
    if isinstance(value, (list, tuple)):
        return [(f'{key}[{index}]', str(path)) for index, path in enumerate(value)]
    return [] if value is None else [(key, str(value))]


def check_packing_model(loader_cfg: dict[str, Any], model_cfg: dict[str, Any], section: str = 'train_loader') -> None:
    """Warn when a packing loader feeds an MPT model that ignores sequence_id: llm-foundry trains it that way,
    with packed examples attending to each other, so it is allowed, but rarely what is meant."""
    dataset = dict(to_plain(loader_cfg)).get('dataset') or {}
    model = dict(to_plain(model_cfg) or {})
    ratio = dataset.get('packing_ratio')
    if ratio in (None, 1) or model.get('name') != 'mpt_causal_lm':
        return
    if not (model.get('attn_config') or {}).get('attn_uses_sequence_id', False):
        log.warning('%s.dataset.packing_ratio=%r packs several examples per row, but '
                    'model.attn_config.attn_uses_sequence_id is false, so packed examples attend to each other '
                    '(llm-foundry trains this way too); set model.attn_config.attn_uses_sequence_id: true to keep '
                    'them apart', section, ratio)
