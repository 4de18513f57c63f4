"""Our Llama-shaped MPT configs <-> transformers' LlamaConfig and LlamaForCausalLM weights."""

from __future__ import annotations

from typing import Any

from llmfoundry.models.mpt import MPTConfig

from .native import HF_ACTIVATIONS, activation_key
from .weights import Renamer, StateDict, fuse_qkv, split_qkv

RENAMES = Renamer([
    ('transformer.wte', 'model.embed_tokens'),
    ('transformer.norm_f', 'model.norm'),
    ('transformer.blocks.{i}.norm_1', 'model.layers.{i}.input_layernorm'),
    ('transformer.blocks.{i}.norm_2', 'model.layers.{i}.post_attention_layernorm'),
    ('transformer.blocks.{i}.attn.Wq', 'model.layers.{i}.self_attn.q_proj'),
    ('transformer.blocks.{i}.attn.Wk', 'model.layers.{i}.self_attn.k_proj'),
    ('transformer.blocks.{i}.attn.Wv', 'model.layers.{i}.self_attn.v_proj'),
    ('transformer.blocks.{i}.attn.out_proj', 'model.layers.{i}.self_attn.o_proj'),
    ('transformer.blocks.{i}.ffn.gate_proj', 'model.layers.{i}.mlp.gate_proj'),
    ('transformer.blocks.{i}.ffn.up_proj', 'model.layers.{i}.mlp.up_proj'),
    ('transformer.blocks.{i}.ffn.down_proj', 'model.layers.{i}.mlp.down_proj'),
    ('lm_head', 'lm_head'),
])

_HF_TO_ACTIVATION = {
    hf: {'name': name, **({'approximate': approx} if approx != 'none' else {})}
    for (name, approx), hf in HF_ACTIVATIONS.items()
}
_TOKEN_KEYS = ('bos_token_id', 'eos_token_id', 'pad_token_id')


def _rope_scaling(scaling: dict[str, Any]) -> dict[str, Any] | None:
    if scaling['type'] == 'no_scaling':
        return None
    out = {'rope_type': scaling['type'], 'factor': float(scaling['factor'])}
    out.update({k: v for k, v in scaling.items() if k not in ('type', 'factor')})
    return out


def to_llama_config(config: MPTConfig) -> dict[str, Any]:
    """LlamaConfig keyword arguments for a config that `native_blockers` admits as Llama."""
    a = config.attn_config
    return {
        'vocab_size': config.vocab_size,
        'hidden_size': config.d_model,
        'intermediate_size': config.ffn_hidden_size,
        'num_hidden_layers': config.n_layers,
        'num_attention_heads': config.n_heads,
        'num_key_value_heads': config.kv_n_heads,
        'head_dim': config.resolved_head_dim,
        'hidden_act': HF_ACTIVATIONS[activation_key(config.ffn_config['ffn_act_fn'])],
        'max_position_embeddings': config.max_seq_len,
        'rms_norm_eps': config.norm_eps,
        'rope_theta': float(a['rope_theta']),
        'rope_scaling': _rope_scaling(a['rope_hf_config']),
        'attention_bias': config.attention_bias,  # equals `not no_bias` here (see _llama_blockers)
        'mlp_bias': not config.no_bias,
        'attention_dropout': a['attn_pdrop'],
        'tie_word_embeddings': config.tie_word_embeddings,
        **{key: getattr(config, key) for key in _TOKEN_KEYS},
    }


def to_llama_weights(state: StateDict, config: MPTConfig) -> StateDict:
    return RENAMES.to_theirs(split_qkv(state, config))


def _check(llama: dict[str, Any], key: str, allowed: tuple[Any, ...]) -> None:
    if llama.get(key, allowed[0]) not in allowed:
        raise ValueError(f'Llama import: not supported: {key}={llama[key]!r} (supported: {allowed}).')


def _rope_hf_config(scaling: dict[str, Any] | None) -> dict[str, Any]:
    if not scaling:
        return {'type': 'no_scaling', 'factor': 1.0}
    scaling = dict(scaling)
    kind = scaling.pop('rope_type', None)
    kind = scaling.pop('type', kind)  # older config.json files say 'type'
    if kind == 'default':
        return {'type': 'no_scaling', 'factor': 1.0}
    if kind not in ('linear', 'dynamic', 'llama3'):
        raise ValueError(f'Llama import: not supported: rope_scaling type {kind!r} (supported: linear, dynamic, '
                         'llama3, default).')
    return {'type': kind, **scaling}


def from_llama_config(llama: dict[str, Any]) -> MPTConfig:
    """The MPTConfig that computes what LlamaForCausalLM computes for this config.json."""
    for key in ('attention_bias', 'mlp_bias'):
        _check(llama, key, (False, True))
    if llama.get('attention_bias', False) != llama.get('mlp_bias', False):
        raise ValueError('Llama import: attention_bias and mlp_bias must be equal (MPT has one no_bias switch).')
    act = llama.get('hidden_act', 'silu')
    if act not in _HF_TO_ACTIVATION:
        raise ValueError(f'Llama import: not supported: hidden_act={act!r} (supported: {sorted(_HF_TO_ACTIVATION)}).')
    heads = llama['num_attention_heads']
    head_dim = llama.get('head_dim') or llama['hidden_size'] // heads
    return MPTConfig(
        d_model=llama['hidden_size'],
        n_heads=heads,
        n_layers=llama['num_hidden_layers'],
        head_dim=None if head_dim * heads == llama['hidden_size'] else head_dim,
        max_seq_len=llama.get('max_position_embeddings', 2048),
        vocab_size=llama['vocab_size'],
        learned_pos_emb=False,
        no_bias=not llama.get('attention_bias', False),
        norm_type='rmsnorm',
        norm_eps=llama.get('rms_norm_eps', 1e-6),
        attn_config={
            'attn_type': 'grouped_query_attention',
            'kv_n_heads': llama.get('num_key_value_heads') or heads,
            'attn_pdrop': llama.get('attention_dropout', 0.0),
            'rope': True,
            'rope_impl': 'hf',
            'rope_theta': llama.get('rope_theta', 10000.0),
            'rope_hf_config': _rope_hf_config(llama.get('rope_scaling')),
        },
        ffn_config={'ffn_type': 'mptglu', 'ffn_hidden_size': llama['intermediate_size'],
                    'ffn_act_fn': _HF_TO_ACTIVATION[act]},
        tie_word_embeddings=llama.get('tie_word_embeddings', False),
        **{key: llama.get(key) for key in _TOKEN_KEYS},
    )


def from_llama_weights(state: StateDict, config: MPTConfig) -> StateDict:
    ours = RENAMES.to_ours(state)
    if config.tie_word_embeddings:
        ours.pop('lm_head.weight', None)
    return fuse_qkv(ours) if config.attn_config['fused_qkv'] else ours
