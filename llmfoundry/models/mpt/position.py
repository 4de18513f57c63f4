"""Position information for attention: ALiBi slopes and rotary embeddings.

Both are computed on the fly from the config (no buffers), so a model built on the meta device
needs nothing re-derived after it is materialised, and long inputs need no precomputed table.
"""

from __future__ import annotations

import math

import torch


def alibi_slopes(n_heads: int, alibi_bias_max: float = 8, device: torch.device | None = None) -> torch.Tensor:
    """Per-head ALiBi slopes as published for MPT.

    With H' = 2**ceil(log2(n_heads)), slope k is 2**(-k * alibi_bias_max / H') for k = 1..H'. When H' != H,
    the even-indexed slopes come first, then the odd ones, truncated to H, so that heads keep a
    geometric spread.
    """
    padded = 2 ** math.ceil(math.log2(n_heads))
    exponents = torch.arange(1, padded + 1, dtype=torch.float32, device=device) * (alibi_bias_max / padded)
    slopes = torch.pow(2.0, -exponents)
    if padded != n_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes


def rotary_inverse_frequencies(
    head_dim: int,
    theta: float,
    scaling: dict,
    max_seq_len: int,
    seq_len: int,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Inverse frequencies of rotary embeddings, with llm-foundry's / Llama's scaling types.

    `scaling` is the validated `rope_hf_config`: no_scaling, linear (positions divided by factor),
    dynamic (NTK: the base grows once seq_len exceeds max_seq_len) or llama3 (frequency-dependent).
    """
    kind, factor = scaling['type'], float(scaling['factor'])
    if kind == 'dynamic' and seq_len > max_seq_len:
        theta = theta * ((factor * seq_len / max_seq_len) - (factor - 1)) ** (head_dim / (head_dim - 2))
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    if kind == 'linear':
        inv_freq = inv_freq / factor
    elif kind == 'llama3':
        inv_freq = _llama3_scaled(inv_freq, factor, scaling)
    return inv_freq


def _llama3_scaled(inv_freq: torch.Tensor, factor: float, scaling: dict) -> torch.Tensor:
    # Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
    context = scaling['original_max_position_embeddings']
    low, high = scaling['low_freq_factor'], scaling['high_freq_factor']
    wavelength = 2 * math.pi / inv_freq
    slowed = torch.where(wavelength > context / low, inv_freq / factor, inv_freq)
    blend = (context / wavelength - low) / (high - low)
    blended = (1 - blend) * slowed / factor + blend * slowed
    in_band = (wavelength >= context / high) & (wavelength <= context / low)
    return torch.where(in_band, blended, slowed)


def rotary_cos_sin(inv_freq: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (batch, seq, head_dim) in float32 for the given positions."""
    angles = position_ids.to(torch.float32)[..., None] * inv_freq.to(position_ids.device)[None, None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x of shape (batch, heads, seq, head_dim); halves are paired (GPT-NeoX / Llama layout)."""
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)
    first, second = x.chunk(2, dim=-1)
    rotated_half = torch.cat([-second, first], dim=-1)
    return x * cos + rotated_half * sin
