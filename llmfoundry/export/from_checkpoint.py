"""Rebuild a model from a training checkpoint so `llmfoundry convert to-hf` can export it.

A training checkpoint holds weights but not a model class: the model is rebuilt from the `model` section of
a training config (mpt_causal_lm, or hf_causal_lm from its pretrained_model_name_or_path's config, with
config_overrides), then the weights are loaded into it in this one process (DCP reshards whatever number of
ranks wrote them). Our checkpoints store their resolved config; Composer's keep theirs in a layout of their
own, so for those the training YAML must be given (`--config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from llmfoundry.models.builders import build_model
from llmfoundry.train import checkpoint
from llmfoundry.train.hf_init import allocate

EXPORTABLE = ('mpt_causal_lm', 'hf_causal_lm')


def resolve_run_folder(src: str | Path) -> str:
    """The checkpoint a run folder's `latest` names (as autoresume picks it), else `src` unchanged.

    A run folder is a training `save_folder`: it holds `latest` next to one folder per checkpoint.
    """
    src = str(src)
    if not checkpoint.is_run_folder(src):
        return src
    found = checkpoint.find_latest(src)
    if found is None:
        raise ValueError(f'{src} is a run folder, but none of its checkpoints is complete; pass one explicitly.')
    return found


def model_from_checkpoint(src: str | Path, config_yaml: str | Path | None = None) -> nn.Module:
    """The model saved in checkpoint `src`, on CPU, built from `config_yaml` or else from the stored config."""
    src = str(src)
    is_composer = checkpoint.is_composer_checkpoint(src)
    if config_yaml is not None:
        config_text = Path(config_yaml).read_text(encoding='utf-8')
    elif is_composer:
        raise ValueError(f'{src} is a Composer checkpoint, which does not hold its training config in a form '
                         'llmfoundry reads; pass the training YAML with --config so the model can be rebuilt.')
    else:
        config_text = checkpoint.read_config_text(src)
        if config_text is None:
            raise ValueError(f'{src} was saved without its training config; pass the training YAML with --config.')
    model = _empty_model(_model_section(config_text, config_yaml or src))
    checkpoint.load(src, model, weights_only=True)  # every parameter is overwritten (strict)
    return model.eval()


def _model_section(config_text: str, origin: str | Path) -> dict[str, Any]:
    resolved = OmegaConf.to_container(OmegaConf.create(config_text), resolve=True)
    if not isinstance(resolved, dict) or not isinstance(resolved.get('model'), dict):
        raise ValueError(f'the training config of {origin} has no model section.')
    return resolved['model']


def _empty_model(section: dict[str, Any]) -> nn.Module:
    """The model of `section` with uninitialised CPU weights: built on meta (no init cost, no pretrained weights
    read), then allocated."""
    name = section.get('name')
    if name not in EXPORTABLE:
        raise ValueError(f"model.name={name!r}: only {' and '.join(EXPORTABLE)} checkpoints can be exported.")
    if name == 'hf_causal_lm':
        model = build_model({**section, 'init_device': 'meta', 'pretrained': False})
        allocate(model, torch.device('cpu'))  # keeps buffers (rotary inv_freq) and tied weights
        return model
    model = build_model({**section, 'init_device': 'meta'})
    model.to_empty(device=torch.device('cpu'))
    model.config.init_device = 'cpu'  # the exported config must not ask loaders for a meta model
    return model
