"""Write a LoRA-adapted model's adapter alone as a peft folder: adapter_config.json and adapter_model.safetensors,
which `peft.PeftModel.from_pretrained(base_model, folder)` loads onto the base model (the model the adapter was
trained on: its module names are the adapter's keys)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from llmfoundry.models.peft_adapter import adapter_config, adapter_state_dict
from llmfoundry.storage import atomic_folder, check_empty_destination
from llmfoundry.train.hf_init import original_class

from .tokenizer_files import copy_tokenizer_files

ADAPTER_WEIGHTS = 'adapter_model.safetensors'


def export_adapter(model: nn.Module, state: dict[str, torch.Tensor], out: str | Path, *,
                   dtype: torch.dtype | None, tokenizer: PreTrainedTokenizerBase | str | Path | None,
                   overwrite: bool) -> None:
    """Write `out` as a peft adapter folder holding the adapter tensors of `state` (a full state dict of `model`)
    in `dtype` (None keeps theirs), with `tokenizer` (an object or a folder) as llm-foundry's adapter folders
    have it; `out` must be absent or empty unless `overwrite`."""
    if not overwrite:
        check_empty_destination(out)
    tensors = {name: (t.to(dtype) if dtype is not None and t.is_floating_point() else t).contiguous()
               for name, t in adapter_state_dict(model, state, original_class(model)).items()}
    config = copy.deepcopy(adapter_config(model))
    config.inference_mode = True  # as peft saves it; from_pretrained(is_trainable=True) turns training back on
    config.base_model_name_or_path = getattr(model.config, '_name_or_path', None) or None
    with atomic_folder(out, replace=overwrite) as tmp:
        config.save_pretrained(tmp)
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={'format': 'pt'})
        if isinstance(tokenizer, PreTrainedTokenizerBase):
            tokenizer.save_pretrained(tmp)
        elif tokenizer is not None:
            copy_tokenizer_files(tokenizer, tmp)
