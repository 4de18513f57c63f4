"""Raw finetuning examples from `datasets` (a local folder, or a builder such as json/csv/parquet with
`hf_kwargs.data_files`, or a hub name when online), tokenised and masked once, in memory.

Every error names the source (hf_name, split and data files) and the example's index in it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from llmfoundry import storage
from llmfoundry.config.validation import ConfigError
from llmfoundry.data.finetuning.formats import FinetuningDataError, Preprocessor
from llmfoundry.data.finetuning.masking import MaskPolicy, Row, masked_row
from llmfoundry.data.finetuning.tokenize import Turn, TurnTokenizer, tokenize_example

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

SAFE_EXTENSIONS = ('.csv', '.json', '.jsonl', '.parquet')
SAFE_IGNORED = ('.lock', '.metadata', '.gitignore')  # what a hub snapshot folder holds besides its data


def describe(hf_name: str, split: str, hf_kwargs: dict[str, Any]) -> str:
    """How errors name a source: 'json split train (data_files: data/train.jsonl)'."""
    files = hf_kwargs.get('data_files') or hf_kwargs.get('data_dir')
    return f"'{hf_name}' split '{split}'" + (f' (files: {files})' if files else '')


def check_safe_folder(folder: str, key: str) -> None:
    """safe_load on a local folder: only data files (no code, no pickles) may be in it."""
    for root, _, files in os.walk(folder):
        for name in files:
            if not name.endswith(SAFE_EXTENSIONS + SAFE_IGNORED):
                raise ConfigError(f'{key}.safe_load: {os.path.join(root, name)} is not one of '
                                  f'{", ".join(SAFE_EXTENSIONS)}; remove it or set safe_load: false')


def load_raw(hf_name: str, split: str, hf_kwargs: dict[str, Any], safe_load: bool, key: str) -> Any:
    """The split as a `datasets.Dataset`; ConfigError saying why it cannot be loaded."""
    import datasets

    if storage.is_remote(hf_name):
        raise ConfigError(f'{key}.hf_name={hf_name!r}: remote folders of {{split}}.jsonl files are not read '
                          'here; copy the files to a local folder and set hf_name to it')
    if safe_load and os.path.isdir(hf_name):
        check_safe_folder(hf_name, key)
    try:
        return datasets.load_dataset(hf_name, split=split, **hf_kwargs)
    except Exception as err:  # datasets raises many types (FileNotFoundError, ValueError, its own errors)
        offline = ''
        if os.environ.get('HF_HUB_OFFLINE', '') not in ('', '0') and not os.path.exists(hf_name):
            offline = (' HF_HUB_OFFLINE is set, so hub datasets cannot be downloaded: use a local folder or '
                       'hf_name: json with hf_kwargs.data_files.')
        raise ConfigError(f'{key}: could not load {describe(hf_name, split, hf_kwargs)}: '
                          f'{type(err).__name__}: {err}.{offline}') from err


def iter_turns(
    examples: Any, preprocess: Preprocessor | None, tokenizer: TurnTokenizer, source: str
) -> Iterator[tuple[int, list[Turn]]]:
    """(index, turns) per raw example; FinetuningDataError naming the source and index of a bad one."""
    for index, raw in enumerate(examples):
        try:
            example = preprocess(dict(raw)) if preprocess is not None else dict(raw)
            # `datasets` gives every row every column of the file (null where absent): absent means absent
            yield index, tokenize_example({k: v for k, v in example.items() if v is not None}, tokenizer)
        except (ValueError, KeyError, TypeError) as err:
            raise FinetuningDataError(f'{source} example {index}: {err}') from err


def masked_rows(
    examples: Any, preprocess: Preprocessor | None, tokenizer: PreTrainedTokenizerBase, policy: MaskPolicy,
    max_seq_len: int, source: str,
) -> list[Row]:  # fmt: skip
    """Every usable example as a masked, truncated row; the unusable are counted in one warning."""
    rows: list[Row] = []
    total = 0
    for _, turns in iter_turns(examples, preprocess, tokenizer, source):
        total += 1
        row = masked_row(turns, policy, tokenizer.eos_token_id, max_seq_len)
        if row is not None:
            rows.append(row)
    dropped = total - len(rows)
    if dropped:
        log.warning('%s: dropped %d of %d examples with no loss-bearing token within max_seq_len=%d (an empty '
                    'prompt or response, or a prompt that fills max_seq_len)', source, dropped, total, max_seq_len)
    if not rows:
        raise FinetuningDataError(f'{source}: no usable examples ({total} read, {dropped} dropped: empty or '
                                  f'no loss-bearing token within max_seq_len={max_seq_len})')
    return rows
