"""State-dict plumbing shared by every format: reading HF weight files, fusing/splitting q/k/v, renaming."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llmfoundry.models.mpt import MPTConfig

StateDict = dict[str, torch.Tensor]

_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')
_INDEX_FILES = ('model.safetensors.index.json', 'pytorch_model.bin.index.json')


def _load_one(path: Path) -> StateDict:
    if path.suffix == '.safetensors':
        return load_file(path)
    return torch.load(path, map_location='cpu', weights_only=True)


def read_state_dict(folder: str | Path) -> StateDict:
    """All tensors of a Hugging Face folder: one safetensors/bin file, or shards listed by an index."""
    folder = Path(folder)
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return _load_one(folder / name)
    for name in _INDEX_FILES:
        if (folder / name).is_file():
            shards = sorted(set(json.loads((folder / name).read_text())['weight_map'].values()))
            state: StateDict = {}
            for shard in shards:
                state.update(_load_one(folder / shard))
            return state
    raise FileNotFoundError(f'{folder}: no weights found (looked for {", ".join(_WEIGHT_FILES + _INDEX_FILES)}).')


def write_safetensors(state: StateDict, folder: Path) -> None:
    # safetensors refuses tensors that share memory (views from a split): store each one on its own.
    tensors = {name: t.detach().to('cpu').contiguous().clone() for name, t in state.items()}
    save_file(tensors, str(folder / 'model.safetensors'), metadata={'format': 'pt'})


def cast(state: StateDict, dtype: torch.dtype | None) -> StateDict:
    if dtype is None:
        return state
    return {name: t.to(dtype) if t.is_floating_point() else t for name, t in state.items()}


def fuse_qkv(state: StateDict) -> StateDict:
    """Replace every layer's attn.Wq/Wk/Wv (weight and bias) by one attn.Wqkv with rows [q, k, v]."""
    out = dict(state)
    for name in [n for n in state if re.search(r'\.attn\.Wq\.(weight|bias)$', n)]:
        prefix, kind = name.rsplit('.Wq.', 1)
        parts = [out.pop(f'{prefix}.{w}.{kind}') for w in ('Wq', 'Wk', 'Wv')]
        out[f'{prefix}.Wqkv.{kind}'] = torch.cat(parts, dim=0)
    return out


def split_qkv(state: StateDict, config: MPTConfig) -> StateDict:
    """Replace every fused attn.Wqkv by attn.Wq/Wk/Wv, using the config's q and kv sizes."""
    q_size = config.n_heads * config.resolved_head_dim
    kv_size = config.kv_n_heads * config.resolved_head_dim
    out = dict(state)
    for name in [n for n in state if re.search(r'\.attn\.Wqkv\.(weight|bias)$', n)]:
        prefix, kind = name.rsplit('.Wqkv.', 1)
        q, k, v = out.pop(name).split([q_size, kv_size, kv_size], dim=0)
        out.update({f'{prefix}.Wq.{kind}': q, f'{prefix}.Wk.{kind}': k, f'{prefix}.Wv.{kind}': v})
    return out


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(re.escape('{i}'), r'(?P<i>\d+)') + r'(?P<rest>(\..*)?)$')


class Renamer:
    """Bidirectional key renaming from (ours, theirs) prefix templates; `{i}` stands for a layer index."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._forward = [(_template_regex(ours), theirs) for ours, theirs in pairs]
        self._backward = [(_template_regex(theirs), ours) for ours, theirs in pairs]

    @staticmethod
    def _apply(state: StateDict, rules, direction: str) -> StateDict:
        out = {}
        for name, tensor in state.items():
            for pattern, target in rules:
                match = pattern.match(name)
                if match:
                    out[target.format(i=match.groupdict().get('i')) + match['rest']] = tensor
                    break
            else:
                raise KeyError(f'{direction}: no mapping for parameter {name!r}.')
        return out

    def to_theirs(self, state: StateDict) -> StateDict:
        return self._apply(state, self._forward, 'export')

    def to_ours(self, state: StateDict) -> StateDict:
        return self._apply(state, self._backward, 'import')
