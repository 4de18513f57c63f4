"""Export our model as a Hugging Face folder: native MPT, native Llama, or remote code (see native.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, MptConfig, PreTrainedTokenizerBase

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.storage import atomic_folder, check_empty_destination

from .from_hf import import_from_hf
from .llama import to_llama_config, to_llama_weights
from .mpt_native import to_native_mpt_config, to_native_mpt_weights
from .native import Format, choose_format
from .remote_code import remote_config_dict, write_modeling_files
from .tokenizer_files import copy_tokenizer_files, has_tokenizer
from .weights import StateDict, cast, write_safetensors

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def check_max_seq_len(config: MPTConfig, max_seq_len: int | None) -> int:
    """The max_seq_len to export: it may only be raised, and only where the numerics do not depend on it."""
    if max_seq_len is None or max_seq_len == config.max_seq_len:
        return config.max_seq_len
    if max_seq_len < config.max_seq_len:
        raise ValueError(f'max_seq_len={max_seq_len} is below the model max_seq_len={config.max_seq_len}; '
                         'it can only be raised.')
    if config.learned_pos_emb:
        raise ValueError('max_seq_len cannot change: learned position embeddings have exactly max_seq_len rows.')
    if config.attn_config['rope'] and config.attn_config['rope_hf_config']['type'] == 'dynamic':
        raise ValueError('max_seq_len cannot change: dynamic rope scaling starts at max_seq_len.')
    return max_seq_len


def _config_dict(fmt: Format, config: MPTConfig, max_seq_len: int) -> dict[str, Any]:
    if fmt == 'mpt':
        return {**MptConfig(**to_native_mpt_config(config, max_seq_len)).to_dict(), 'architectures': ['MptForCausalLM']}
    if fmt == 'llama':
        llama = {**to_llama_config(config), 'max_position_embeddings': max_seq_len}
        return {**LlamaConfig(**llama).to_dict(), 'architectures': ['LlamaForCausalLM']}
    return {**remote_config_dict(config), 'max_seq_len': max_seq_len}


def _write_config(folder: Path, config_dict: dict[str, Any], dtype: torch.dtype) -> None:
    config_dict = {k: v for k, v in config_dict.items() if k != 'dtype'}
    config_dict['torch_dtype'] = str(dtype).removeprefix('torch.')  # the key every transformers version reads
    (folder / 'config.json').write_text(json.dumps(config_dict, indent=2, sort_keys=True) + '\n', encoding='utf-8')


def _weights(fmt: Format, model: MPTForCausalLM) -> StateDict:
    state = model.state_dict()
    if fmt == 'mpt':
        return to_native_mpt_weights(state)
    if fmt == 'llama':
        return to_llama_weights(state, model.config)
    return state


def export_to_hf(
    model_or_dir: MPTForCausalLM | str | Path,
    out_dir: str | Path,
    dtype: torch.dtype | str | None = None,
    max_seq_len: int | None = None,
    tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
    remote_code: bool = False,
    overwrite: bool = False,
) -> Format:
    """Write `out_dir` as a Hugging Face folder and return its format: 'mpt', 'llama' or 'remote_code'.

    `model_or_dir` is a model or any folder `import_from_hf` reads; a folder's tokenizer files and
    generation_config.json travel along. `tokenizer` (a folder or a tokenizer object) overrides them.
    `dtype` defaults to the weights' own. `remote_code=True` writes remote code even where a native class fits.
    `out_dir` must be absent or empty unless `overwrite`: then an existing folder is replaced in one swap.
    """
    if not overwrite:
        check_empty_destination(out_dir)
    src_dir = None
    if isinstance(model_or_dir, MPTForCausalLM):
        model = model_or_dir
    else:
        src_dir, model = Path(model_or_dir), import_from_hf(model_or_dir)
    if tokenizer is None and src_dir is not None and has_tokenizer(src_dir):
        tokenizer = src_dir
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype or next(model.parameters()).dtype
    fmt = 'remote_code' if remote_code else choose_format(model.config)
    config_dict = _config_dict(fmt, model.config, check_max_seq_len(model.config, max_seq_len))
    with atomic_folder(out_dir, replace=overwrite) as tmp:
        _write_config(tmp, config_dict, dtype)
        if fmt == 'remote_code':
            write_modeling_files(tmp)
        write_safetensors(cast(_weights(fmt, model), dtype), tmp)
        if src_dir is not None and (src_dir / 'generation_config.json').is_file():
            shutil.copy2(src_dir / 'generation_config.json', tmp / 'generation_config.json')
        else:
            model.generation_config.save_pretrained(tmp)
        if isinstance(tokenizer, PreTrainedTokenizerBase):
            tokenizer.save_pretrained(tmp)
        elif tokenizer is not None:
            copy_tokenizer_files(tokenizer, tmp)
    return fmt
