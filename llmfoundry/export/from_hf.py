"""Import Hugging Face folders into our MPTForCausalLM with identical logits.

Supported sources: our own save_pretrained folders, mosaicml remote-code MPT folders (mpt-7b style),
our exported remote-code folders, transformers-native MPT folders and Llama folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from transformers import GenerationConfig

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.models.mpt.configuration_mpt import REMOTE_MODEL_TYPE, config_kind
from llmfoundry.storage import atomic_folder

from .llama import from_llama_config, from_llama_weights
from .mpt_native import from_native_mpt_config
from .tokenizer_files import copy_tokenizer_files, has_tokenizer
from .weights import StateDict, cast, read_state_dict

SourceKind = Literal['llmfoundry', 'native_mpt', 'llama']
# Keys of an llm-foundry-style config.json that describe the file, not the model.
_FILE_KEYS = ('model_type', 'architectures', 'auto_map')


def read_config(src: str | Path) -> dict[str, Any]:
    path = Path(src) / 'config.json'
    if not path.is_file():
        raise FileNotFoundError(f'{src}: not a Hugging Face model folder (no config.json).')
    return json.loads(path.read_text(encoding='utf-8'))


def source_kind(config: dict[str, Any]) -> SourceKind:
    """Which semantics a config.json has: llm-foundry's MPT (ours, mosaicml's, our remote code), native MPT, Llama."""
    kind = config_kind(config)
    if kind in get_args(SourceKind):
        return kind
    model_type = config.get('model_type')
    raise ValueError(f"Cannot import model_type={model_type!r}: supported are 'mpt' (llm-foundry, mosaicml or "
                     f"transformers-native) and 'llama' folders, and our '{REMOTE_MODEL_TYPE}' exports.")


def _llmfoundry_config(config: dict[str, Any]) -> MPTConfig:
    config = {k: v for k, v in config.items() if k not in _FILE_KEYS}
    if isinstance(config.get('attn_config'), dict):
        config['attn_config'] = {k: v for k, v in config['attn_config'].items() if k != 'model_type'}
    return MPTConfig(**config)


def _convert(kind: SourceKind, config_json: dict[str, Any], state: StateDict) -> tuple[MPTConfig, StateDict]:
    if kind == 'llama':
        config = from_llama_config(config_json)
        return config, from_llama_weights(state, config)
    config = from_native_mpt_config(config_json) if kind == 'native_mpt' else _llmfoundry_config(config_json)
    if config.tie_word_embeddings:
        state = {k: v for k, v in state.items() if k != 'lm_head.weight'}
    return config, state


def import_from_hf(src: str | Path, dtype: torch.dtype | None = None) -> MPTForCausalLM:
    """Our model (eval mode) computing what `src`'s model computes; `dtype` defaults to the stored one."""
    config_json = read_config(src)
    config, state = _convert(source_kind(config_json), config_json, read_state_dict(src))
    with torch.device('meta'):  # no throw-away initialisation: every parameter comes from the checkpoint
        model = MPTForCausalLM(config)
    model.load_state_dict(cast(state, dtype), strict=True, assign=True)
    if (Path(src) / 'generation_config.json').is_file():
        model.generation_config = GenerationConfig.from_pretrained(src)
    return model.eval()


def convert_from_hf(src: str | Path, out_dir: str | Path, dtype: torch.dtype | None = None) -> SourceKind:
    """Write our save_pretrained folder (plus tokenizer files) for a supported HF folder; returns its kind."""
    kind = source_kind(read_config(src))
    model = import_from_hf(src, dtype)
    with atomic_folder(out_dir) as tmp:
        model.save_pretrained(tmp)
        if has_tokenizer(src):
            copy_tokenizer_files(src, tmp)
    return kind


def load_model(path: str | Path, **kwargs: Any) -> MPTForCausalLM:
    """Our MPTForCausalLM from any folder `llmfoundry convert from-hf` reads.

    llm-foundry's and mosaicml's MPT folders and our remote-code exports load through
    MPTForCausalLM.from_pretrained, with all of its options. Transformers-native MPT and Llama folders are
    converted (identical logits); for those only dtype (or torch_dtype) is honoured, and other options are
    refused rather than ignored.
    """
    config_file = Path(path) / 'config.json'
    if not config_file.is_file() or source_kind(read_config(path)) == 'llmfoundry':
        return MPTForCausalLM.from_pretrained(path, **kwargs)
    dtype, torch_dtype = kwargs.pop('dtype', None), kwargs.pop('torch_dtype', None)
    dtype = dtype or torch_dtype
    if kwargs:
        raise ValueError(f'options {sorted(kwargs)} are not supported for {path}: it is converted by '
                         'llmfoundry.export (only dtype is).')
    return import_from_hf(path, None if dtype == 'auto' else dtype)
