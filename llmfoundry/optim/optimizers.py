"""Optimizers named in llm-foundry YAMLs (`decoupled_adamw`, `decoupled_lionw`, `adamw`), with `param_groups` and
`disable_grad`.

Decoupled weight decay follows Composer, because the weight_decay values in users' YAMLs were tuned for it: before
each update every parameter is multiplied by ``1 - weight_decay * lr_t / lr_0``, where ``lr_0`` is the group's
``initial_lr`` (its lr when built) and ``lr_t`` the lr the scheduler set for this step. The decay follows the schedule's
shape but not the lr's magnitude: weight_decay=1e-5 removes 1e-5 of every weight per step at peak lr. (torch's AdamW
decays by ``lr_t * weight_decay`` instead, so the same number there is about 1/lr times weaker.)

The `optimizers` registry (llmfoundry/registry.py) maps a YAML name to a factory ``(param_groups, **kwargs) ->
Optimizer``; the keyword parameters of the factory's signature are the keys the YAML section may carry, so a plugin
adds an optimizer with one registry entry.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.optim import Optimizer

from llmfoundry.config.validation import check_keys
from llmfoundry.registry import optimizers

log = logging.getLogger(__name__)

__all__ = ['DecoupledAdamW', 'DecoupledLionW', 'build_optimizer', 'torch_adamw']


def _schedule_multiplier(group: Mapping[str, Any]) -> float:
    """lr_t / lr_0 for a group: how far the scheduler has scaled it (1.0 when it was built with lr 0)."""
    return group['lr'] / group['initial_lr'] if group['initial_lr'] else 1.0


def _check_betas(betas: Iterable[float], name: str) -> tuple[float, float]:
    betas = tuple(betas)
    if len(betas) != 2 or not all(0.0 <= beta <= 1.0 for beta in betas):
        raise ValueError(f'{name}: betas must be two numbers in [0, 1], got {betas}.')
    return betas


class _DecoupledOptimizer(Optimizer):
    """What DecoupledAdamW and DecoupledLionW share: `initial_lr` on every group, the decay, the gather of params with
    gradients. Subclasses implement `_update` on the parameters of one group that have a gradient."""

    def __init__(self, params: Any, lr: float, betas: Iterable[float], weight_decay: float, **defaults: Any) -> None:
        name = type(self).__name__
        if lr < 0 or weight_decay < 0:
            raise ValueError(f'{name}: lr and weight_decay must be >= 0 (lr={lr}, weight_decay={weight_decay}).')
        defaults.update(lr=lr, betas=_check_betas(betas, name), weight_decay=weight_decay)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group['betas'] = _check_betas(group['betas'], type(self).__name__)
        group.setdefault('initial_lr', group['lr'])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group['params'] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError(f'{type(self).__name__} does not support sparse gradients.')
            if group['weight_decay']:
                torch._foreach_mul_(params, 1.0 - group['weight_decay'] * _schedule_multiplier(group))
            self._update(group, params, [p.grad for p in params])
        return loss

    def _update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        raise NotImplementedError


class DecoupledAdamW(_DecoupledOptimizer):
    """Adam with decoupled weight decay (module docstring); Composer's defaults (betas 0.9/0.95, weight_decay 1e-5).

    Per step k of a parameter: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2 (v_max = max(v_max, v) with amsgrad);
    p -= lr * (m / (1-b1^k)) / (sqrt(v / (1-b2^k)) + eps).
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: Iterable[float] = (0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 1e-5, amsgrad: bool = False) -> None:
        if eps < 0:
            raise ValueError(f'DecoupledAdamW: eps must not be negative, got {eps}.')
        super().__init__(params, lr, betas, weight_decay, eps=eps, amsgrad=amsgrad)

    def _update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        beta1, beta2 = group['betas']
        states = []
        for p in params:
            state = self.state[p]
            if not state:
                # 'step' as a tensor like torch's own optimizers, so sharded-checkpoint tooling treats it alike.
                state.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                if group['amsgrad']:
                    state['max_exp_avg_sq'] = torch.zeros_like(p)
            state['step'] += 1
            states.append(state)
        steps = [state['step'].item() for state in states]
        exp_avgs = [state['exp_avg'] for state in states]
        exp_avg_sqs = [state['exp_avg_sq'] for state in states]
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        if group['amsgrad']:
            second = [state['max_exp_avg_sq'] for state in states]
            torch._foreach_maximum_(second, exp_avg_sqs)
        else:
            second = exp_avg_sqs
        denom = torch._foreach_sqrt(second)
        torch._foreach_div_(denom, [math.sqrt(1 - beta2**k) for k in steps])
        torch._foreach_add_(denom, group['eps'])
        torch._foreach_addcdiv_(params, exp_avgs, denom, [-group['lr'] / (1 - beta1**k) for k in steps])


class DecoupledLionW(_DecoupledOptimizer):
    """Lion (Chen et al. 2023) with decoupled weight decay (module docstring); llm-foundry's defaults.

    Per step: p -= lr * sign(b1 m + (1-b1) g); then m = b2 m + (1-b2) g.
    """

    def __init__(self, params: Any, lr: float = 1e-4, betas: Iterable[float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr, betas, weight_decay)

    def _update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        beta1, beta2 = group['betas']
        exp_avgs = []
        for p in params:
            state = self.state[p]
            if not state:
                state['exp_avg'] = torch.zeros_like(p)
            exp_avgs.append(state['exp_avg'])
        direction = torch._foreach_mul(exp_avgs, beta1)
        torch._foreach_add_(direction, grads, alpha=1 - beta1)
        torch._foreach_sign_(direction)
        torch._foreach_add_(params, direction, alpha=-group['lr'])
        torch._foreach_mul_(exp_avgs, beta2)
        torch._foreach_add_(exp_avgs, grads, alpha=1 - beta2)


def torch_adamw(params: list[dict[str, Any]], lr: float = 1e-3, betas: Iterable[float] = (0.9, 0.999),
                eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, maximize: bool = False,
                foreach: bool | None = None, fused: bool | None = None) -> Optimizer:
    """torch.optim.AdamW (decay scaled by lr); its fused kernel by default when every parameter is on CUDA, which
    replaces several kernel launches per tensor with one per step."""
    if fused is None and foreach is None:
        tensors = [p for group in params for p in group['params']]
        fused = bool(tensors) and all(p.is_cuda for p in tensors)
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                             maximize=maximize, foreach=foreach, fused=fused)


_SECTION_KEYS = ('name', 'param_groups', 'disable_grad')


def _kwarg_names(factory: Callable[..., Optimizer]) -> list[str]:
    """The keys a YAML section may set: the factory's parameters after the first (the param groups)."""
    return list(inspect.signature(factory).parameters)[1:]


def _patterns(value: Any, path: str) -> list[re.Pattern[str]]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f'{path} must be a regex or a list of regexes, got {value!r}.')
    try:
        return [re.compile(v) for v in values]
    except re.error as error:
        raise ValueError(f'{path}: invalid regex: {error}.') from error


def _disable_grad(model: torch.nn.Module, value: Any) -> None:
    """`disable_grad`: freeze every parameter whose name a regex matches (re.search, as llm-foundry)."""
    named = list(model.named_parameters())
    for pattern in _patterns(value, 'optimizer.disable_grad'):
        matched = [(n, p) for n, p in named if pattern.search(n)]
        if not matched:
            log.warning('optimizer.disable_grad %r matches no parameter.', pattern.pattern)
        for _, p in matched:
            p.requires_grad_(False)


def _param_groups(model: torch.nn.Module, specs: Any, kwarg_names: list[str]) -> list[dict[str, Any]]:
    """Group 0 holds the parameters no `param_groups` entry matched (llm-foundry's order, which lr-<Opt>/group0
    logging relies on); entry i becomes group i+1 with its own overrides. A parameter joins the first entry whose
    `param_str_match` regex it matches (re.search). Frozen parameters (requires_grad False: disable_grad, or the
    base model under a LoRA adapter) are left out: they never get a gradient, so they need no optimizer state."""
    remaining = {name: param for name, param in model.named_parameters() if param.requires_grad}
    if specs is None:
        return [{'params': list(remaining.values())}]
    if not isinstance(specs, list):
        raise ValueError(f'optimizer.param_groups must be a list of mappings, got {specs!r}.')
    groups = []
    for i, spec in enumerate(specs):
        path = f'optimizer.param_groups[{i}]'
        if not isinstance(spec, Mapping) or 'param_str_match' not in spec:
            raise ValueError(f'{path} must be a mapping with a param_str_match regex, got {spec!r}.')
        check_keys(spec, ['param_str_match', *kwarg_names], path)
        (pattern,) = _patterns(spec['param_str_match'], f'{path}.param_str_match')
        names = [n for n in remaining if pattern.search(n)]
        if not names:
            log.warning('%s.param_str_match %r matches no parameter not already grouped.', path, pattern.pattern)
        overrides = {k: v for k, v in spec.items() if k != 'param_str_match'}
        groups.append({'params': [remaining.pop(n) for n in names], **overrides})
    return [{'params': list(remaining.values())}, *groups]


def build_optimizer(cfg: Mapping[str, Any], model: torch.nn.Module) -> Optimizer:
    """The optimizer a YAML `optimizer:` section describes, over `model`'s parameters.

    Every group carries `initial_lr` (its lr as built), which `llmfoundry.optim.schedulers.apply_lr` multiplies by the
    schedule. `disable_grad` is applied to `model` here (requires_grad=False on matching names).
    """
    name, factory = optimizers.get_named(cfg, 'optimizer')
    kwarg_names = _kwarg_names(factory)
    check_keys(cfg, [*_SECTION_KEYS, *kwarg_names], 'optimizer')
    if 'disable_grad' in cfg:
        _disable_grad(model, cfg['disable_grad'])
    groups = _param_groups(model, cfg.get('param_groups'), kwarg_names)
    optimizer = factory(groups, **{k: v for k, v in cfg.items() if k not in _SECTION_KEYS})
    for group in optimizer.param_groups:
        group.setdefault('initial_lr', group['lr'])
    log.debug('built optimizer %s with %d param groups', name, len(optimizer.param_groups))
    return optimizer
