"""Our MPT configs <-> transformers' native MptConfig (weights share our names, q/k/v fused)."""

from __future__ import annotations

import warnings
from typing import Any

from llmfoundry.models.mpt import MPTConfig

from .weights import StateDict, fuse_qkv

# What transformers' MptForCausalLM computes whatever its config.json says (see native.py's blockers).
_NATIVE_SEMANTICS: dict[str, Any] = {
    'expansion_ratio': 4,
    'no_bias': True,
    'logit_scale': None,
}
_NATIVE_ATTN_SEMANTICS: dict[str, Any] = {
    'attn_type': 'multihead_attention',
    'alibi': True,
    'alibi_bias_max': 8,
    'qk_ln': False,
}
_NATIVE_ATTN_KEYS = ('attn_pdrop', 'clip_qkv', 'softmax_scale', 'attn_uses_sequence_id')
_TOKEN_KEYS = ('bos_token_id', 'eos_token_id', 'pad_token_id')


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def to_native_mpt_config(config: MPTConfig, max_seq_len: int) -> dict[str, Any]:
    """MptConfig keyword arguments for a config that `native_blockers` admits as native MPT."""
    a = config.attn_config
    return {
        'd_model': config.d_model,
        'n_heads': config.n_heads,
        'n_layers': config.n_layers,
        'expansion_ratio': 4,
        'max_seq_len': max_seq_len,  # transformers builds its ALiBi table only this long
        'vocab_size': config.vocab_size,
        'resid_pdrop': config.resid_pdrop,
        'emb_pdrop': config.emb_pdrop,
        'layer_norm_epsilon': float(config.norm_eps),
        'learned_pos_emb': False,
        'no_bias': True,
        'norm_type': config.norm_type,
        'embedding_fraction': 1.0,
        'logit_scale': None,
        'use_cache': config.use_cache,
        'tie_word_embeddings': True,
        'attn_config': {
            'attn_type': 'multihead_attention',
            'attn_impl': 'torch',
            'alibi': True,
            'alibi_bias_max': 8,
            'qk_ln': False,
            # Dropout does not change inference, and transformers 5 types attn_pdrop as an int: write 0.
            'attn_pdrop': 0,
            'clip_qkv': _float_or_none(a['clip_qkv']),
            'softmax_scale': _float_or_none(a['softmax_scale']),
            'attn_uses_sequence_id': a['attn_uses_sequence_id'],
        },
        **{key: getattr(config, key) for key in _TOKEN_KEYS},
    }


def to_native_mpt_weights(state: StateDict) -> StateDict:
    return fuse_qkv(state)


def from_native_mpt_config(native: dict[str, Any]) -> MPTConfig:
    """The MPTConfig that computes what transformers' MptForCausalLM computes for this config.json.

    The native class ignores several of the fields it stores; where config.json disagrees with what
    the class actually does, the class wins (the weights were made by, or for, it) and we warn.
    """
    native = dict(native)
    attn = dict(native.pop('attn_config', None) or {})
    ignored = [f'{k}={native[k]!r}' for k, v in _NATIVE_SEMANTICS.items() if k in native and native[k] != v]
    ignored += [f'attn_config.{k}={attn[k]!r}' for k, v in _NATIVE_ATTN_SEMANTICS.items() if k in attn and attn[k] != v]
    if native.get('norm_type', 'layernorm') not in ('layernorm', 'low_precision_layernorm'):
        ignored.append(f"norm_type={native['norm_type']!r}")
    if ignored:
        warnings.warn(f"transformers' MptForCausalLM ignores {', '.join(ignored)}; importing what it computes.",
                      stacklevel=3)
    # tie_word_embeddings is honoured: transformers ties lm_head to wte only when it is true (the default).
    keep = ('d_model', 'n_heads', 'n_layers', 'max_seq_len', 'vocab_size', 'resid_pdrop', 'emb_pdrop', 'use_cache',
            'tie_word_embeddings', *_TOKEN_KEYS)
    return MPTConfig(
        **{k: native[k] for k in keep if k in native},
        **_NATIVE_SEMANTICS,
        learned_pos_emb=False,  # native MPT has no wpe (its default learned_pos_emb=True is moot with ALiBi)
        norm_type='low_precision_layernorm',
        norm_eps=native.get('layer_norm_epsilon', 1e-5),
        attn_config={**_NATIVE_ATTN_SEMANTICS, **{k: attn[k] for k in _NATIVE_ATTN_KEYS if k in attn}},
    )
