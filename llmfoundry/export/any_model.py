"""Write a complete Hugging Face folder from any trained model and its full state dict.

llmfoundry's MPT goes through `export_to_hf` (native MPT / Llama, or remote code); any other transformers model is
written with `save_pretrained` semantics (config.json, safetensors with tied weights stored once, generation
config, its remote code if it has any). Either way the weights come from `state` (e.g. gathered from FSDP shards)
loaded into a meta-device clone, so no second copy of the model is allocated, and the folder appears atomically.
A LoRA-adapted model (models/peft_adapter.py) is written as its adapter alone (a peft folder, adapter.py) or with
the adapter merged into the base weights, as a plain folder of the base model.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llmfoundry.models.mpt import MPTForCausalLM
from llmfoundry.models.peft_adapter import SAVE_PEFT_ONLY_ATTR, base_clone, has_adapter, merged_state_dict
from llmfoundry.storage import atomic_folder, check_empty_destination
from llmfoundry.train.hf_init import original_class

from .adapter import export_adapter
from .to_hf import DTYPES, export_to_hf
from .tokenizer_files import copy_tokenizer_files
from .weights import cast

Tokenizer = PreTrainedTokenizerBase | str | Path | None


def export_state_dict(model: nn.Module, state: dict[str, torch.Tensor], out: str | Path, *, dtype: str | None,
                      tokenizer: Tokenizer, overwrite: bool, peft_only: bool | None = None) -> None:
    """Write `out` as a Hugging Face folder of `model`'s architecture holding the weights `state` in `dtype`
    ('float32', 'bfloat16', 'float16'; None keeps the weights' own) and `tokenizer` (an object or a folder).
    `out` must be absent or empty unless `overwrite`: then an existing folder is replaced in one swap.
    For a LoRA-adapted model `peft_only` picks the adapter alone (True) or merged weights (False); None follows
    the model's should_save_peft_only (default true, as llm-foundry)."""
    if has_adapter(model):
        if getattr(model, SAVE_PEFT_ONLY_ATTR, True) if peft_only is None else peft_only:
            export_adapter(model, state, out, dtype=DTYPES[dtype] if dtype else None, tokenizer=tokenizer,
                           overwrite=overwrite)
            return
        state = merged_state_dict(model, state, original_class(model))
        model = base_clone(model, original_class(model))  # the exporters below take class and configs from it
    if isinstance(model, MPTForCausalLM):
        _export_mpt(model, state, out, dtype, tokenizer, overwrite)
    elif isinstance(model, PreTrainedModel):
        _export_pretrained(model, state, out, dtype, tokenizer, overwrite)
    else:
        raise TypeError(f'{type(model).__name__} is neither llmfoundry MPT nor a transformers PreTrainedModel; '
                        'there is no Hugging Face folder layout for it.')


def _export_mpt(model: MPTForCausalLM, state: dict[str, torch.Tensor], out: str | Path, dtype: str | None,
                tokenizer: Tokenizer, overwrite: bool) -> None:
    config = copy.deepcopy(model.config)
    config.init_device = 'meta'  # weights come from `state`; nothing to allocate or initialise
    with torch.device('meta'):
        clone = MPTForCausalLM(config)
    clone.load_state_dict(state, assign=True)
    clone.config.init_device = 'cpu'  # the exported config must not ask loaders for a meta model
    export_to_hf(clone, out, dtype=dtype, tokenizer=tokenizer, overwrite=overwrite)


def _clone_with(model: PreTrainedModel, state: dict[str, torch.Tensor]) -> PreTrainedModel:
    """A meta-built model of `model`'s class and config whose parameters are the tensors of `state`."""
    config = copy.deepcopy(model.config)
    config.use_cache = True  # hf_causal_lm turns the KV cache off for training; the folder is for inference
    with torch.device('meta'):
        clone = original_class(model)(config)
    clone.load_state_dict(state, assign=True, strict=False)
    clone.tie_weights()  # a tied weight may be in `state` once, or twice as separate tensors
    missing = [name for name, param in clone.named_parameters() if param.is_meta]
    if missing:
        raise ValueError(f'the state dict lacks {", ".join(missing)} of {type(clone).__name__}.')
    clone.generation_config = copy.deepcopy(model.generation_config)
    return clone


def _export_pretrained(model: PreTrainedModel, state: dict[str, torch.Tensor], out: str | Path, dtype: str | None,
                       tokenizer: Tokenizer, overwrite: bool) -> None:
    if not overwrite:
        check_empty_destination(out)
    clone = _clone_with(model, cast(state, DTYPES[dtype]) if dtype else state)
    with atomic_folder(out, replace=overwrite) as tmp:
        clone.save_pretrained(tmp, safe_serialization=True)
        if isinstance(tokenizer, PreTrainedTokenizerBase):
            tokenizer.save_pretrained(tmp)
        elif tokenizer is not None:
            copy_tokenizer_files(tokenizer, tmp)
