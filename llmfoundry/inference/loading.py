"""A model and its tokenizer for generation, from a training run or checkpoint folder or a Hugging Face folder.

Checkpoints are rebuilt as `llmfoundry convert to-hf` rebuilds them (the stored or given training config's model
section), and their tokenizer is the config's `tokenizer` section. Folders `llmfoundry convert from-hf` reads
(ours, mosaicml's, native MPT, Llama) load as our MPTForCausalLM; anything else goes to AutoModelForCausalLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from llmfoundry.data.tokenizers import build_tokenizer, looks_like_path
from llmfoundry.export import load_model, source_kind
from llmfoundry.export.from_checkpoint import model_from_checkpoint, resolve_run_folder
from llmfoundry.export.from_hf import read_config
from llmfoundry.train import checkpoint

TORCH_DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def pick_device(name: str | None) -> torch.device:
    if name is not None:
        return torch.device(name)
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def load_for_generation(
    name_or_path: str, *, tokenizer: str | None = None, config: str | None = None, dtype: str | None = None,
    device: str | None = None, trust_remote_code: bool = True,
) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """(model in eval mode on `device`, tokenizer) for `name_or_path`; `dtype` is 'fp32', 'bf16' or 'fp16'."""
    if looks_like_path(name_or_path) and not Path(name_or_path).expanduser().exists():
        raise FileNotFoundError(f'{name_or_path} does not exist')  # rather than a hub id error about its name
    torch_dtype = TORCH_DTYPES[dtype] if dtype is not None else None
    src = resolve_run_folder(name_or_path)
    if checkpoint.is_training_checkpoint(src):
        model = model_from_checkpoint(src, config)
        if torch_dtype is not None:
            model = model.to(torch_dtype)
        tok = _load_tokenizer(tokenizer, trust_remote_code) if tokenizer else _checkpoint_tokenizer(src, config)
    else:
        model = _load_folder(src, torch_dtype, trust_remote_code)
        tok = _load_tokenizer(tokenizer or src, trust_remote_code)
    return model.to(pick_device(device)).eval(), tok


def describe(model: nn.Module) -> str:
    """'MPTForCausalLM, torch.bfloat16, cpu': what a command loaded, printed before it generates."""
    param = next(model.parameters())
    return f'{type(model).__name__}, {param.dtype}, {param.device}'


def _load_folder(src: str, torch_dtype: torch.dtype | None, trust_remote_code: bool) -> nn.Module:
    if (Path(src) / 'config.json').is_file():
        try:
            source_kind(read_config(src))
        except ValueError:  # a model type we do not convert: transformers loads it
            pass
        else:
            return load_model(src, **({'dtype': torch_dtype} if torch_dtype is not None else {}))
    return AutoModelForCausalLM.from_pretrained(src, torch_dtype=torch_dtype or 'auto',
                                                trust_remote_code=trust_remote_code)


def _load_tokenizer(name: str, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)


def _checkpoint_tokenizer(src: str, config_yaml: str | None) -> PreTrainedTokenizerBase:
    """The tokenizer the run trained with: its config's `tokenizer` section, as the trainer builds it."""
    text = (Path(config_yaml).read_text(encoding='utf-8') if config_yaml is not None
            else checkpoint.read_config_text(src))
    resolved: Any = OmegaConf.to_container(OmegaConf.create(text or '{}'), resolve=True)
    section = resolved.get('tokenizer') if isinstance(resolved, dict) else None
    if not isinstance(section, dict) or not section.get('name'):
        raise ValueError(f'the training config of {src} names no tokenizer; pass --tokenizer.')
    return build_tokenizer(section['name'], section.get('kwargs'))
