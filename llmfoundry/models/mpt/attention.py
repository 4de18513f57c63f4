"""Multi-head / grouped-query / multi-query attention with three kernels (attn_impl).

- torch: F.scaled_dot_product_attention with an additive bias holding ALiBi, the causal mask, the
  sliding window, packed-document (sequence_id) and key-padding masks. Runs everywhere.
- flex: FlexAttention; ALiBi and logit softcapping as a score modifier, masks as a block mask. Compiled
  on CUDA: the fast path without extra packages. On CPU it serves inference only (PyTorch has no CPU
  backward for it) and runs PyTorch's uncompiled reference, see `_eager_flex`.
- flash: flash-attn when installed (varlen for packed or padded batches); ALiBi needs flash-attn >= 2.4,
  the sliding window >= 2.3 and logit softcapping >= 2.6 (we pass only the arguments in use). When flash-attn
  is missing, or the installed one lacks a feature in use, one warning says why, and another kernel runs:
  torch on CPU or while training with attention dropout (FlexAttention has none), else flex.
Decoding steps with a KV cache (fewer queries than keys) always use the torch kernel: the same math
on tiny query blocks, where the other kernels bring nothing.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from .layers import build_norm
from .position import apply_rotary

try:  # optional: the `gpu` extra
    from flash_attn import flash_attn_func, flash_attn_varlen_func
except ImportError:
    flash_attn_func = flash_attn_varlen_func = None


@dataclass
class AttentionContext:
    """What every layer's attention needs for one forward pass, computed once by the model."""

    query_len: int
    past_len: int
    alibi_slopes: torch.Tensor | None  # (heads,) float32
    rotary: tuple[torch.Tensor, torch.Tensor] | None  # cos, sin: (batch, seq, head_dim) float32
    key_padding_mask: torch.Tensor | None  # (batch, keys) bool, True = attend; None = no padding
    sequence_id: torch.Tensor | None  # (batch, seq) long; None = documents may attend to each other
    sliding_window: int  # -1 = off; else a query sees keys at distance <= window
    softcap: float | None
    impl: str  # the kernel that actually runs: torch | flex | flash
    # The torch kernel's bias, built once per forward and shared by all layers: (key_len, dtype, device) -> bias.
    bias_cache: dict = field(default_factory=dict, repr=False)
    # The flex kernel's BlockMask, built once per forward by the model (flex_block_mask) and shared by all layers.
    block_mask: object | None = field(default=None, repr=False)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


# flash-attn keyword -> the first flash-attn version that accepts it.
FLASH_FEATURE_VERSIONS = {'window_size': '2.3', 'alibi_slopes': '2.4', 'softcap': '2.6'}


_accepted: dict[object, frozenset[str]] = {}  # a plain dict: torch.compile traces through it without a warning


def _accepted_kwargs(fn) -> frozenset[str]:
    if fn not in _accepted:
        _accepted[fn] = frozenset(inspect.signature(fn).parameters)
    return _accepted[fn]


def flash_features_needed(ctx: AttentionContext) -> tuple[str, ...]:
    """The optional flash-attn keywords that this forward pass needs."""
    used = {'window_size': ctx.sliding_window >= 0, 'alibi_slopes': ctx.alibi_slopes is not None,
            'softcap': ctx.softcap is not None}
    return tuple(name for name, needed in used.items() if needed)


def _flash_missing(needs: tuple[str, ...]) -> list[str]:
    """Of `needs`, the keywords the installed flash-attn (both entry points) does not accept."""
    accepted = _accepted_kwargs(flash_attn_func) & _accepted_kwargs(flash_attn_varlen_func)
    return [name for name in needs if name not in accepted]


def _flash_missing_message(missing: list[str]) -> str:
    return 'the installed flash-attn lacks ' + ', '.join(
        f'{name}= (added in flash-attn {FLASH_FEATURE_VERSIONS[name]})' for name in missing)


def resolve_attn_impl(requested: str, device: torch.device, decoding: bool, *, dropout: bool = False,
                      needs: tuple[str, ...] = ()) -> str:
    """The kernel that runs for `requested` on `device` (see the module docstring).

    `dropout`: attention dropout is active (attn_pdrop > 0 while training); `needs`: the flash-attn keywords in
    use (`flash_features_needed`).
    """
    if decoding or requested != 'flash':
        return 'torch' if decoding else requested
    if flash_attn_func is None:
        reason = 'flash-attn is not installed (pip install "llmfoundry[gpu]")'
    elif device.type != 'cuda':
        reason = 'flash-attn needs a CUDA device'
    elif missing := _flash_missing(needs):
        reason = _flash_missing_message(missing)
    else:
        return 'flash'
    fallback = 'torch' if device.type != 'cuda' or dropout else 'flex'
    if device.type == 'cuda' and dropout:
        reason += ', and FlexAttention has no attention dropout (attn_pdrop > 0 while training)'
    _warn_once(f"attn_impl='flash': {reason}; running attn_impl='{fallback}' instead.")
    return fallback


class GroupedQueryAttention(nn.Module):
    """Attention with n_heads query heads sharing kv_n_heads key/value heads (MHA and MQA are special cases)."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        attn = config.attn_config
        self.layer_idx = layer_idx
        self.n_heads = config.n_heads
        self.kv_n_heads = config.kv_n_heads
        self.head_dim = config.resolved_head_dim
        self.softmax_scale = attn['softmax_scale'] or self.head_dim**-0.5
        self.clip_qkv = attn['clip_qkv']
        self.dropout_p = attn['attn_pdrop']
        self.qk_gn = attn['qk_gn']
        bias, qkv_bias = not config.no_bias, config.attention_bias  # as llm-foundry: q/k/v follow attention_bias
        q_size, kv_size = self.n_heads * self.head_dim, self.kv_n_heads * self.head_dim
        self.split_sizes = [q_size, kv_size, kv_size]
        if attn['fused_qkv']:
            self.Wqkv = nn.Linear(config.d_model, sum(self.split_sizes), bias=qkv_bias)
            self.Wqkv.fused_split_sizes = self.split_sizes
        else:
            self.Wq = nn.Linear(config.d_model, q_size, bias=qkv_bias)
            self.Wk = nn.Linear(config.d_model, kv_size, bias=qkv_bias)
            self.Wv = nn.Linear(config.d_model, kv_size, bias=qkv_bias)
        if attn['qk_ln'] or attn['qk_gn']:
            q_norm, k_norm = (self.head_dim, self.head_dim) if attn['qk_gn'] else (q_size, kv_size)
            self.q_ln = build_norm(config.norm_type, q_norm, config.norm_eps, bias=bias)
            self.k_ln = build_norm(config.norm_type, k_norm, config.norm_eps, bias=bias)
        self.out_proj = nn.Linear(q_size, config.d_model, bias=bias)
        self.out_proj.is_residual = True

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if hasattr(self, 'Wqkv'):
            qkv = self.Wqkv(x)
            if self.clip_qkv:
                qkv = qkv.clamp(-self.clip_qkv, self.clip_qkv)
            return qkv.split(self.split_sizes, dim=-1)
        q, k, v = self.Wq(x), self.Wk(x), self.Wv(x)
        if self.clip_qkv:
            q, k, v = (t.clamp(-self.clip_qkv, self.clip_qkv) for t in (q, k, v))
        return q, k, v

    def _heads(self, t: torch.Tensor, n: int, norm: nn.Module | None) -> torch.Tensor:
        batch, seq, _ = t.shape
        if norm is not None and not self.qk_gn:
            t = norm(t)
        t = t.view(batch, seq, n, self.head_dim)
        if norm is not None and self.qk_gn:
            t = norm(t)
        return t.transpose(1, 2)  # (batch, heads, seq, head_dim)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, cache=None) -> torch.Tensor:
        batch, seq, _ = x.shape
        q, k, v = self._project(x)
        q = self._heads(q, self.n_heads, getattr(self, 'q_ln', None))
        k = self._heads(k, self.kv_n_heads, getattr(self, 'k_ln', None))
        v = self._heads(v, self.kv_n_heads, None)
        if ctx.rotary is not None:
            cos, sin = ctx.rotary
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        dropout_p = self.dropout_p if self.training else 0.0
        if ctx.impl == 'flash':
            out = _flash_attention(q, k, v, ctx, self.softmax_scale, dropout_p)
        elif ctx.impl == 'flex':
            out = _flex_attention(q, k, v, ctx, self.softmax_scale)
        else:
            out = _torch_attention(q, k, v, ctx, self.softmax_scale, dropout_p)
        return self.out_proj(out.transpose(1, 2).reshape(batch, seq, self.n_heads * self.head_dim))


# ----- torch (SDPA) ---------------------------------------------------------------------------------
def attention_bias(ctx: AttentionContext, key_len: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive bias (batch or 1, heads or 1, queries, keys): ALiBi where allowed, dtype's minimum elsewhere."""
    q_pos = torch.arange(ctx.past_len, ctx.past_len + ctx.query_len, device=device)
    k_pos = torch.arange(key_len, device=device)
    distance = q_pos[:, None] - k_pos[None, :]
    allowed = distance >= 0
    if ctx.sliding_window >= 0:
        allowed &= distance <= ctx.sliding_window
    allowed = allowed[None, None]
    if ctx.sequence_id is not None:
        allowed = allowed & (ctx.sequence_id[:, None, :, None] == ctx.sequence_id[:, None, None, :])
    if ctx.key_padding_mask is not None:
        allowed = allowed & ctx.key_padding_mask[:, None, None, :]
    if ctx.alibi_slopes is not None:
        bias = -ctx.alibi_slopes.to(device)[None, :, None, None] * distance[None, None].to(torch.float32)
    else:
        bias = torch.zeros((), dtype=torch.float32, device=device)
    bias = bias.to(dtype)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)


def _torch_attention(q, k, v, ctx: AttentionContext, scale: float, dropout_p: float) -> torch.Tensor:
    key = (k.shape[2], q.dtype, q.device)
    if key not in ctx.bias_cache:
        ctx.bias_cache[key] = attention_bias(ctx, *key)
    bias = ctx.bias_cache[key]
    if ctx.softcap is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale, enable_gqa=k.shape[1] != q.shape[1]
        )
    # Softcapping acts on the raw scores, which SDPA does not expose: compute them explicitly.
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = ctx.softcap * torch.tanh(scores / ctx.softcap) + bias
    probs = F.dropout(scores.float().softmax(dim=-1).to(q.dtype), p=dropout_p)
    return torch.matmul(probs, v)


# ----- flex ----------------------------------------------------------------------------------------
@cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _eager_flex(q, k, v, **kwargs) -> torch.Tensor:
    """PyTorch's reference FlexAttention (no compiled kernel), for CPU.

    The compiled CPU kernel of torch 2.14.1 returns wrong numbers on some CPUs (seen on AVX2: rows of a
    40-token sequence off by ~3, NaN with batch 2, while 64 tokens were right), so a machine-dependent
    result would reach users silently. The reference computes the same masked, score-modified softmax
    densely: exact everywhere, slower, and CPU flex serves inference only anyway.
    """
    from torch.nn.attention import flex_attention as flex_module

    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*flex_attention called without torch.compile.*')
        return flex_module.flex_attention(q, k, v, **kwargs)


def _build_block_mask(batch: int | None, query_len: int, key_len: int, window: int, seq_id: torch.Tensor | None,
                      keep: torch.Tensor | None, device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q_idx, kv_idx):
        allowed = kv_idx <= q_idx
        if window >= 0:
            allowed = allowed & (q_idx - kv_idx <= window)
        if seq_id is not None:
            allowed = allowed & (seq_id[b, q_idx] == seq_id[b, kv_idx])
        if keep is not None:
            allowed = allowed & keep[b, kv_idx]
        return allowed

    # Built outside the compiled blocks: on CUDA compile the build itself, or it would evaluate mask_mod densely over
    # (batch, query_len, key_len) (gigabytes at 64k tokens; PyTorch's flex_attention docs). CPU builds stay eager.
    return create_block_mask(mask_mod, batch, None, query_len, key_len, device=device,
                             _compile=device.type == 'cuda')


_STATIC_BLOCK_MASKS: dict = {}  # (query_len, key_len, window, device) -> BlockMask; a plain dict, as _accepted
_STATIC_BLOCK_MASKS_KEPT = 16  # shapes kept (generation prefills vary in length); the oldest goes first


def flex_block_mask(ctx: AttentionContext, batch: int, device: torch.device):
    """The flex kernel's BlockMask for one forward pass (every layer shares it). Without packed documents or padding
    it depends only on the shape and the sliding window, so it is reused across forwards (training steps)."""
    key_len = ctx.past_len + ctx.query_len
    if ctx.sequence_id is not None or ctx.key_padding_mask is not None:
        return _build_block_mask(batch, ctx.query_len, key_len, ctx.sliding_window, ctx.sequence_id,
                                 ctx.key_padding_mask, device)
    key = (ctx.query_len, key_len, ctx.sliding_window, device)
    if key not in _STATIC_BLOCK_MASKS:
        if len(_STATIC_BLOCK_MASKS) >= _STATIC_BLOCK_MASKS_KEPT:
            _STATIC_BLOCK_MASKS.pop(next(iter(_STATIC_BLOCK_MASKS)))
        _STATIC_BLOCK_MASKS[key] = _build_block_mask(None, ctx.query_len, key_len, ctx.sliding_window, None, None,
                                                     device)
    return _STATIC_BLOCK_MASKS[key]


def _flex_attention(q, k, v, ctx: AttentionContext, scale: float) -> torch.Tensor:
    if q.device.type == 'cpu' and torch.is_grad_enabled() and q.requires_grad:
        raise RuntimeError(
            "attn_impl='flex' cannot train on CPU: PyTorch has no FlexAttention backward pass on CPU. "
            "Use attn_impl: torch for CPU training (flex still serves CPU inference)."
        )
    slopes, softcap = ctx.alibi_slopes, ctx.softcap
    if slopes is not None:
        slopes = slopes.to(q.device)

    def score_mod(score, b, h, q_idx, kv_idx):
        if softcap is not None:
            score = softcap * torch.tanh(score / softcap)
        if slopes is not None:
            score = score + slopes[h] * (kv_idx - q_idx)
        return score

    kernel = _eager_flex if q.device.type == 'cpu' else _compiled_flex()
    return kernel(q, k, v, score_mod=score_mod, block_mask=ctx.block_mask, scale=scale,
                  enable_gqa=k.shape[1] != q.shape[1])


# ----- flash-attn -----------------------------------------------------------------------------------
def _flash_attention(q, k, v, ctx: AttentionContext, scale: float, dropout_p: float) -> torch.Tensor:
    missing = _flash_missing(flash_features_needed(ctx))
    if missing:
        raise RuntimeError(f"attn_impl='flash': {_flash_missing_message(missing)}; upgrade flash-attn "
                           "(pip install -U flash-attn) or use attn_impl: torch or flex.")
    # flash-attn wants (batch, seq, heads, head_dim) in fp16/bf16. Optional features go only where used, so
    # any flash-attn that has the features in use accepts the call.
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    kwargs: dict = dict(dropout_p=dropout_p, softmax_scale=scale, causal=True)
    if ctx.sliding_window >= 0:
        kwargs['window_size'] = (ctx.sliding_window, ctx.sliding_window)
    if ctx.alibi_slopes is not None:
        kwargs['alibi_slopes'] = ctx.alibi_slopes.to(q.device)
    if ctx.softcap is not None:
        kwargs['softcap'] = ctx.softcap
    if ctx.sequence_id is None and ctx.key_padding_mask is None:
        return flash_attn_func(q, k, v, **kwargs).transpose(1, 2)
    # Packed documents or padding: attend within each run of equal (row, document) among kept tokens.
    batch, seq, heads, dim = q.shape
    keep = ctx.key_padding_mask if ctx.key_padding_mask is not None else torch.ones(batch, seq, dtype=torch.bool,
                                                                                       device=q.device)
    doc = ctx.sequence_id if ctx.sequence_id is not None else torch.zeros_like(keep, dtype=torch.long)
    index = keep.flatten().nonzero().squeeze(1)
    run = (torch.arange(batch, device=q.device)[:, None] * (seq + 1) + doc).flatten()[index]
    starts = torch.cat([torch.ones(1, dtype=torch.bool, device=q.device), run[1:] != run[:-1]]).nonzero().squeeze(1)
    lengths = torch.diff(torch.cat([starts, torch.tensor([index.numel()], device=q.device)]))
    cu_seqlens = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    max_len = int(lengths.max())
    out = flash_attn_varlen_func(
        q.reshape(batch * seq, heads, dim)[index],
        k.reshape(batch * seq, k.shape[2], dim)[index],
        v.reshape(batch * seq, v.shape[2], dim)[index],
        cu_seqlens, cu_seqlens, max_len, max_len, **kwargs,
    )
    full = out.new_zeros(batch * seq, heads, dim)
    full[index] = out
    return full.view(batch, seq, heads, dim).transpose(1, 2)
