"""Norms and feed-forward layers of an MPT block."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    device_type = x.device.type
    if device_type in ('cuda', 'cpu') and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


class LayerNorm(nn.Module):
    """LayerNorm whose bias is optional; `low_precision` runs it in the autocast dtype (MPT's LPLayerNorm)."""

    def __init__(self, size: int, eps: float, bias: bool, low_precision: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.low_precision = low_precision
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _autocast_dtype(x) if self.low_precision else None
        if dtype is None:
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        bias = None if self.bias is None else self.bias.to(dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.layer_norm(x.to(dtype), self.weight.shape, self.weight.to(dtype), bias, self.eps)


class RMSNorm(nn.Module):
    """RMSNorm computed in (at least) float32 and cast back, as Llama does; `low_precision` keeps autocast's dtype."""

    def __init__(self, size: int, eps: float, low_precision: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.low_precision = low_precision
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype = (_autocast_dtype(x) if self.low_precision else None) or x.dtype
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        normed = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight.to(out_dtype) * normed.to(out_dtype)


def build_norm(norm_type: str, size: int, eps: float, bias: bool) -> nn.Module:
    low_precision = norm_type.startswith('low_precision_')
    if norm_type.endswith('rmsnorm'):
        return RMSNorm(size, eps, low_precision=low_precision)
    return LayerNorm(size, eps, bias=bias, low_precision=low_precision)


def build_activation(spec: dict | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """`ffn_act_fn` from the config; None is exact GELU (MPT's default)."""
    if spec is None:
        return nn.GELU(approximate='none')
    name = spec['name']
    if name == 'gelu':
        return nn.GELU(approximate=spec.get('approximate', 'none'))
    return {'silu': nn.SiLU, 'relu': nn.ReLU}[name]()


class MPTMLP(nn.Module):
    """up_proj -> activation -> down_proj."""

    def __init__(self, d_model: int, hidden: int, activation: Callable, bias: bool) -> None:
        super().__init__()
        self.up_proj = nn.Linear(d_model, hidden, bias=bias)
        self.act = activation
        self.down_proj = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


class MPTGLU(MPTMLP):
    """Gated variant: down_proj(act(gate_proj(x)) * up_proj(x)) (SwiGLU with silu)."""

    def __init__(self, d_model: int, hidden: int, activation: Callable, bias: bool) -> None:
        super().__init__(d_model, hidden, activation, bias)
        self.gate_proj = nn.Linear(d_model, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


def build_ffn(config) -> nn.Module:
    cls = MPTGLU if config.ffn_config['ffn_type'] == 'mptglu' else MPTMLP
    activation = build_activation(config.ffn_config['ffn_act_fn'])
    return cls(config.d_model, config.ffn_hidden_size, activation, bias=not config.no_bias)
