"""Which Hugging Face format an MPTConfig exports to: native MPT, native Llama, or our remote code.

A native class hard-codes or ignores some of our fields; it is chosen only when each of those fields has
the value the native class assumes, because a folder it would load silently wrong is worse than none.
`native_blockers` names, for every native class, each field that rules it out, so that a user (and a
test) can see exactly why a config falls back to remote code.
"""

from __future__ import annotations

from typing import Literal

from llmfoundry.models.mpt import MPTConfig

Format = Literal['mpt', 'llama', 'remote_code']
NATIVE_FORMATS: tuple[Format, ...] = ('mpt', 'llama')

# Our activation spec (name, approximate) -> transformers' ACT2FN name with the same numerics.
HF_ACTIVATIONS: dict[tuple[str, str], str] = {
    ('gelu', 'none'): 'gelu',
    ('gelu', 'tanh'): 'gelu_pytorch_tanh',
    ('silu', 'none'): 'silu',
    ('relu', 'none'): 'relu',
}


def activation_key(ffn_act_fn: dict | None) -> tuple[str, str]:
    """The (name, approximate) of `ffn_config.ffn_act_fn`; None is MPT's exact GELU."""
    if ffn_act_fn is None:
        return ('gelu', 'none')
    return (ffn_act_fn['name'], ffn_act_fn.get('approximate', 'none'))


def _common_blockers(config: MPTConfig) -> dict[str, str]:
    """Fields neither native class has: each maps to why it blocks."""
    a = config.attn_config
    checks = {
        'attn_config.qk_ln': (a['qk_ln'], 'no query/key LayerNorm'),
        'attn_config.qk_gn': (a['qk_gn'], 'no per-head query/key norm'),
        'attn_config.attn_logit_softcapping': (a['attn_logit_softcapping'] is not None, 'no attention softcapping'),
        'attn_config.sliding_window_size': (a['sliding_window_size'] != -1, 'no sliding window'),
        'logit_scale': (config.logit_scale is not None, 'no logit scale'),
        'final_logit_softcapping': (config.final_logit_softcapping is not None, 'no final logit softcapping'),
        'embedding_fraction': (config.embedding_fraction != 1, 'no embedding gradient fraction'),
        'learned_pos_emb': (config.learned_pos_emb, 'no learned position embedding'),
        'attn_config.nope': (a['nope'], 'no position-free attention'),
    }
    return {path: reason for path, (blocks, reason) in checks.items() if blocks}


def _mpt_blockers(config: MPTConfig) -> dict[str, str]:
    a, f = config.attn_config, config.ffn_config
    checks = {
        'attn_config.alibi': (not a['alibi'], 'native MPT always applies ALiBi'),
        'attn_config.alibi_bias_max': (a['alibi_bias_max'] != 8, 'native MPT hard-codes alibi_bias_max=8'),
        'attn_config.rope': (a['rope'], 'native MPT has no rotary embedding'),
        'no_bias': (not config.no_bias, 'native MPT has no biases'),
        'attention_bias': (config.attention_bias, 'native MPT has no q/k/v bias'),
        'attn_config.attn_type': (config.kv_n_heads != config.n_heads, 'native MPT is multi-head attention only'),
        'ffn_config.ffn_type': (f['ffn_type'] != 'mptmlp', 'native MPT has no gated FFN'),
        'ffn_config.ffn_act_fn': (activation_key(f['ffn_act_fn']) != ('gelu', 'none'),
                                  'native MPT hard-codes exact GELU'),
        'expansion_ratio': (config.ffn_hidden_size != 4 * config.d_model,
                            'native MPT hard-codes an FFN hidden size of 4 * d_model'),
        'norm_type': (config.norm_type not in ('layernorm', 'low_precision_layernorm'),
                      'native MPT uses LayerNorm'),
        'head_dim': (config.resolved_head_dim * config.n_heads != config.d_model,
                     'native MPT derives head_dim as d_model / n_heads'),
        'tie_word_embeddings': (not config.tie_word_embeddings, 'native MPT always ties lm_head to wte'),
    }
    return {path: reason for path, (blocks, reason) in checks.items() if blocks}


def _llama_blockers(config: MPTConfig) -> dict[str, str]:
    a, f = config.attn_config, config.ffn_config
    checks = {
        'attn_config.rope': (not a['rope'], 'Llama uses rotary embeddings'),
        'attn_config.alibi': (a['alibi'], 'Llama has no ALiBi'),
        'attn_config.clip_qkv': (a['clip_qkv'] is not None, 'Llama does not clip q/k/v'),
        'attn_config.softmax_scale': (a['softmax_scale'] is not None, 'Llama fixes the scale at head_dim**-0.5'),
        'norm_type': (config.norm_type not in ('rmsnorm', 'low_precision_rmsnorm'), 'Llama uses RMSNorm'),
        # Llama's attention_bias switches q/k/v and o_proj together; ours switches q/k/v, and no_bias o_proj.
        'attention_bias': (config.attention_bias == config.no_bias,
                           "Llama's attention_bias covers q/k/v and o_proj alike; here only one of them has a bias"),
        'ffn_config.ffn_type': (f['ffn_type'] != 'mptglu', 'Llama has a gated FFN'),
        'ffn_config.ffn_act_fn': (activation_key(f['ffn_act_fn']) not in HF_ACTIVATIONS,
                                  'no transformers activation with the same numerics'),
    }
    return {path: reason for path, (blocks, reason) in checks.items() if blocks}


def native_blockers(config: MPTConfig) -> dict[Format, dict[str, str]]:
    """For each native format, {config key path: why it rules that format out}; empty means it fits."""
    common = _common_blockers(config)
    return {'mpt': {**common, **_mpt_blockers(config)}, 'llama': {**common, **_llama_blockers(config)}}


def choose_format(config: MPTConfig) -> Format:
    """The first native format with no blocker, else 'remote_code'."""
    blockers = native_blockers(config)
    return next((fmt for fmt in NATIVE_FORMATS if not blockers[fmt]), 'remote_code')
