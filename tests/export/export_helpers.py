"""Tiny models and comparisons shared by the export tests (CPU, fp32, random weights)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

VOCAB = 128
TOL = 1e-5
HEAD_SCALE = 4.0  # see sharpen()

# The released MPT architecture, tiny.
MPT_BASE: dict[str, Any] = {
    'd_model': 48, 'n_heads': 6, 'n_layers': 2, 'vocab_size': VOCAB, 'max_seq_len': 64, 'no_bias': True,
    'norm_type': 'low_precision_layernorm', 'attn_config': {'alibi': True, 'attn_impl': 'torch'},
}
# A Llama-shaped MPT, tiny, with grouped-query attention.
LLAMA_BASE: dict[str, Any] = {
    'd_model': 48, 'n_heads': 6, 'n_layers': 2, 'vocab_size': VOCAB, 'max_seq_len': 64, 'no_bias': True,
    'norm_type': 'rmsnorm', 'norm_eps': 1e-6,
    'attn_config': {'rope': True, 'rope_impl': 'hf', 'attn_impl': 'torch', 'attn_type': 'grouped_query_attention',
                    'kv_n_heads': 2},
    'ffn_config': {'ffn_type': 'mptglu', 'ffn_hidden_size': 96, 'ffn_act_fn': {'name': 'silu'}},
    'tie_word_embeddings': False,
}


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied; nested dicts (attn_config, ffn_config) are merged key by key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != 'ffn_act_fn':
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@torch.no_grad()
def tiny_model(base: dict[str, Any], seed: int = 0, **overrides: Any) -> MPTForCausalLM:
    """A random model whose norms and biases are random too (so that swapped or dropped ones show)."""
    torch.manual_seed(seed)
    model = MPTForCausalLM(MPTConfig(**merged(base, overrides))).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    for name, param in model.named_parameters():
        if name.endswith('bias'):
            param.copy_(0.2 * torch.randn(param.shape, generator=generator))
        elif '.norm' in name or name.endswith(('_ln.weight', 'norm_f.weight')):
            param.copy_(1 + 0.2 * torch.randn(param.shape, generator=generator))
    return model


def input_ids(batch: int = 2, seq: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def logits(model: torch.nn.Module, ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    return model(input_ids=ids, **kwargs).logits.float()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def load_hf(folder: str | Path, expected_class: str) -> torch.nn.Module:
    """Load with transformers' auto class (no remote code) and check that every weight came from the folder."""
    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert type(model).__name__ == expected_class
    assert set(info['missing_keys']) <= {'lm_head.weight'} and not info['unexpected_keys'], info
    if 'lm_head.weight' in info['missing_keys']:
        assert model.config.tie_word_embeddings
    return model.eval()


@torch.no_grad()
def greedy(model: torch.nn.Module, ids: torch.Tensor, new_tokens: int = 32) -> torch.Tensor:
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         do_sample=False, use_cache=True, pad_token_id=0)
    return out[:, ids.shape[1]:]


@torch.no_grad()
def min_top2_margin(model: MPTForCausalLM, prompt: torch.Tensor, generated: torch.Tensor) -> float:
    """Smallest gap between the best and second-best logit over the generated steps (greedy is only
    comparable across implementations when it is far above the numerical tolerance)."""
    full = torch.cat([prompt, generated], dim=1)
    steps = logits(model, full)[:, prompt.shape[1] - 1:-1]
    top2 = steps.topk(2, dim=-1).values
    return (top2[..., 0] - top2[..., 1]).min().item()


@torch.no_grad()
def sharpen(model: torch.nn.Module) -> None:
    # Scaling the output head (the embedding when tied, in both implementations) widens the top-2 gaps.
    head = model.get_output_embeddings() or model.get_input_embeddings()
    head.weight.mul_(HEAD_SCALE)


def assert_same_greedy(ours: MPTForCausalLM, theirs: torch.nn.Module, prompt: torch.Tensor) -> None:
    """32 greedy tokens with a KV cache agree. Sharpens both models' heads in place: call it last."""
    sharpen(ours)
    sharpen(theirs)
    tokens = greedy(ours, prompt)
    assert tokens.shape == (prompt.shape[0], 32)
    assert min_top2_margin(ours, prompt, tokens) > 1e-3
    assert torch.equal(tokens, greedy(theirs, prompt))


def assert_native_export_exact(ours: MPTForCausalLM, folder: Path, fmt: str, expected_class: str) -> None:
    """`ours` takes the `fmt` export path, and transformers' native class gives the same logits."""
    from llmfoundry.export import choose_format, export_to_hf

    assert choose_format(ours.config) == fmt
    export_to_hf(ours, folder)
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(load_hf(folder, expected_class), ids)) <= TOL
