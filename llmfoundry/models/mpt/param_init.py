"""Deterministic parameter initialisation with llm-foundry's init schemes.

Every parameter draws from its own generator, seeded by (model seed, parameter name). A weight is
therefore the same whether the model was built on cpu, or on meta and materialised later, and
whatever the order, device or sharding it is initialised in: `initial_value` gives the full tensor
for any parameter, and a sharded trainer keeps only its slice of it.

Schemes (init_config.name): kaiming_normal_ / kaiming_uniform_ (a=init_gain, mode=fan_mode,
nonlinearity=init_nonlinearity), xavier_uniform_ / xavier_normal_ (gain=init_gain), small_init_
(normal, std=sqrt(2 / (5 d_model))), neox_init_ (small_init_ with residual division n_layers / sqrt(10)),
baseline_ (normal, std=init_std), default_ (PyTorch's own layer defaults). Except for default_:
residual output projections (attn.out_proj, ffn.down_proj) are divided by sqrt(2 n_layers) when
init_div_is_residual is true (or by its value when it is a number); embeddings use emb_init_std or
emb_init_uniform_lim when set; a fused Wqkv initialises its q, k and v blocks separately; norms
start at weight 1, bias 0; biases start at 0.
"""

from __future__ import annotations

import hashlib
import math
from functools import partial

import torch
from torch import nn


def parameter_seed(base_seed: int, name: str) -> int:
    """A stable 63-bit seed for one parameter (independent of Python's hash randomisation)."""
    digest = hashlib.sha256(f'{base_seed}:{name}'.encode()).digest()
    return int.from_bytes(digest[:8], 'little') & (2**63 - 1)


def _residual_divisor(config) -> float:
    init = config.init_config
    if init['name'] == 'neox_init_':
        return config.n_layers / math.sqrt(10)
    div = init['init_div_is_residual']
    if div is True:
        return math.sqrt(2 * config.n_layers)
    if div is False:
        return 1.0
    return float(div)


def _weight_init_fn(config, generator: torch.Generator):
    init = config.init_config
    name = init['name']
    if name in ('kaiming_normal_', 'kaiming_uniform_'):
        fn = getattr(nn.init, name)
        return partial(fn, a=init['init_gain'], mode=init['fan_mode'], nonlinearity=init['init_nonlinearity'],
                       generator=generator)
    if name in ('xavier_normal_', 'xavier_uniform_'):
        return partial(getattr(nn.init, name), gain=init['init_gain'], generator=generator)
    std = math.sqrt(2 / (5 * config.d_model)) if name in ('small_init_', 'neox_init_') else init['init_std']
    return partial(nn.init.normal_, mean=0.0, std=std, generator=generator)


def _init_embedding(weight: torch.Tensor, config, generator: torch.Generator) -> None:
    init = config.init_config
    if init['name'] == 'default_':
        nn.init.normal_(weight, generator=generator)
    elif init['emb_init_std'] is not None:
        nn.init.normal_(weight, std=init['emb_init_std'], generator=generator)
    elif init['emb_init_uniform_lim'] is not None:
        lim = init['emb_init_uniform_lim']
        low, high = (-lim, lim) if isinstance(lim, (int, float)) else lim
        nn.init.uniform_(weight, low, high, generator=generator)
    else:
        _weight_init_fn(config, generator)(weight)


def _init_linear_weight(weight: torch.Tensor, module: nn.Module, config, generator: torch.Generator) -> None:
    if config.init_config['name'] == 'default_':
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
        return
    init_fn = _weight_init_fn(config, generator)
    start = 0
    for size in getattr(module, 'fused_split_sizes', [weight.shape[0]]):
        init_fn(weight[start:start + size])
        start += size
    if getattr(module, 'is_residual', False):
        weight.div_(_residual_divisor(config))


def initial_value(module: nn.Module, param_name: str, full_name: str, config, base_seed: int) -> torch.Tensor:
    """The full initial value (float32, cpu) of `module`'s parameter `param_name`, named `full_name` in the model."""
    param = getattr(module, param_name)
    value = torch.empty(tuple(param.shape), dtype=torch.float32)
    generator = torch.Generator().manual_seed(parameter_seed(base_seed, full_name))
    if isinstance(module, nn.Embedding):
        _init_embedding(value, config, generator)
    elif isinstance(module, nn.Linear) and param_name == 'weight':
        _init_linear_weight(value, module, config, generator)
    elif isinstance(module, nn.Linear) and config.init_config['name'] == 'default_':
        bound = 1 / math.sqrt(module.in_features)
        nn.init.uniform_(value, -bound, bound, generator=generator)
    elif param_name == 'weight':  # norms
        value.fill_(1.0)
    else:  # biases
        value.zero_()
    return value


@torch.no_grad()
def init_module(module: nn.Module, prefix: str, config, base_seed: int) -> None:
    """Initialise `module`'s own (non-recursive) parameters; meta parameters are left for later."""
    for param_name, param in module.named_parameters(recurse=False):
        if param.is_meta:
            continue
        full_name = f'{prefix}.{param_name}' if prefix else param_name
        param.copy_(initial_value(module, param_name, full_name, config, base_seed))
