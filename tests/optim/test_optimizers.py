"""Decoupled AdamW / LionW match hand-written reference updates (decay scaled by lr_t/lr_0, not lr); the adamw path,
param_groups and disable_grad by regex, and config errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from llmfoundry.optim import DecoupledAdamW, DecoupledLionW, apply_lr, build_optimizer

MULTIPLIERS = [0.0, 0.5, 1.0, 0.7, 0.3, 0.9]  # a schedule that rises and falls, as warmup then decay would


def gradients(shape: tuple[int, ...], steps: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(steps)]


def run(optimizer: torch.optim.Optimizer, param: nn.Parameter, grads: list[torch.Tensor]) -> torch.Tensor:
    for multiplier, grad in zip(MULTIPLIERS, grads):
        apply_lr(optimizer, multiplier)
        param.grad = grad.clone()
        optimizer.step()
    return param.detach()


def reference_adamw(p, grads, lr0, betas, eps, weight_decay):
    """Composer's DecoupledAdamW, written out element-wise: decay by wd * lr_t/lr_0, then the bias-corrected step."""
    b1, b2 = betas
    p, m, v = p.clone(), torch.zeros_like(p), torch.zeros_like(p)
    for k, (multiplier, g) in enumerate(zip(MULTIPLIERS, grads), start=1):
        lr = lr0 * multiplier
        p = p * (1 - weight_decay * lr / lr0)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**k)) / ((v / (1 - b2**k)).sqrt() + eps)
    return p


def reference_lion(p, grads, lr0, betas, weight_decay):
    b1, b2 = betas
    p, m = p.clone(), torch.zeros_like(p)
    for multiplier, g in zip(MULTIPLIERS, grads):
        lr = lr0 * multiplier
        p = p * (1 - weight_decay * lr / lr0)
        p = p - lr * torch.sign(b1 * m + (1 - b1) * g)
        m = b2 * m + (1 - b2) * g
    return p


def test_decoupled_adamw_matches_reference_under_a_changing_lr():
    start = torch.randn(4, 3, dtype=torch.float64)
    param = nn.Parameter(start.clone())
    optimizer = DecoupledAdamW([param], lr=0.05, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    grads = gradients(start.shape, len(MULTIPLIERS))
    expected = reference_adamw(start, grads, 0.05, (0.9, 0.95), 1e-8, 0.1)
    torch.testing.assert_close(run(optimizer, param, grads), expected, rtol=1e-12, atol=1e-12)


def test_decoupled_decay_alone_is_weight_decay_times_multiplier_not_lr():
    """With zero gradients only the decay acts: p_T = p_0 * prod(1 - wd * m_t), independent of lr's magnitude."""
    start = torch.randn(5, dtype=torch.float64)
    expected = start * torch.tensor([1 - 0.2 * m for m in MULTIPLIERS], dtype=torch.float64).prod()
    zeros = [torch.zeros_like(start)] * len(MULTIPLIERS)
    for cls in (DecoupledAdamW, DecoupledLionW):
        for lr in (1e-4, 1.0):
            param = nn.Parameter(start.clone())
            torch.testing.assert_close(run(cls([param], lr=lr, weight_decay=0.2), param, zeros), expected)


def test_decoupled_lionw_matches_reference():
    start = torch.randn(6, dtype=torch.float64)
    param = nn.Parameter(start.clone())
    grads = gradients(start.shape, len(MULTIPLIERS))
    optimizer = DecoupledLionW([param], lr=0.01, betas=(0.9, 0.99), weight_decay=0.05)
    expected = reference_lion(start, grads, 0.01, (0.9, 0.99), 0.05)
    torch.testing.assert_close(run(optimizer, param, grads), expected, rtol=1e-12, atol=1e-12)


def test_state_dict_round_trip_continues_identically():
    start = torch.randn(3, dtype=torch.float64)
    grads = gradients(start.shape, 4)
    whole = nn.Parameter(start.clone())
    optimizer = DecoupledAdamW([whole], lr=0.1, weight_decay=0.01, amsgrad=True)
    for g in grads:
        whole.grad = g.clone()
        optimizer.step()
    resumed = nn.Parameter(start.clone())
    first = DecoupledAdamW([resumed], lr=0.1, weight_decay=0.01, amsgrad=True)
    for g in grads[:2]:
        resumed.grad = g.clone()
        first.step()
    second = DecoupledAdamW([resumed], lr=0.1, weight_decay=0.01, amsgrad=True)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    for g in grads[2:]:
        resumed.grad = g.clone()
        second.step()
    torch.testing.assert_close(resumed, whole, rtol=0, atol=0)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(8, 4)
        self.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
        self.norm = nn.LayerNorm(4)


def names_by_group(optimizer: torch.optim.Optimizer, model: nn.Module) -> list[list[str]]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [sorted(name_of[id(p)] for p in group['params']) for group in optimizer.param_groups]


def test_param_groups_first_match_wins_and_the_rest_are_group_zero():
    model = Tiny()
    cfg = {
        'name': 'decoupled_adamw', 'lr': 1e-3, 'betas': [0.9, 0.95], 'weight_decay': 1e-5,
        'param_groups': [
            {'param_str_match': r'bias$|norm', 'weight_decay': 0.0},
            {'param_str_match': r'blocks\.1\.', 'lr': 5e-4, 'betas': [0.8, 0.9]},
        ],
    }
    optimizer = build_optimizer(cfg, model)
    assert names_by_group(optimizer, model) == [
        ['blocks.0.weight', 'wte.weight'],
        ['blocks.0.bias', 'blocks.1.bias', 'norm.bias', 'norm.weight'],
        ['blocks.1.weight'],
    ]
    settings = [(g['lr'], g['initial_lr'], g['weight_decay'], g['betas']) for g in optimizer.param_groups]
    assert settings == [(1e-3, 1e-3, 1e-5, (0.9, 0.95)), (1e-3, 1e-3, 0.0, (0.9, 0.95)), (5e-4, 5e-4, 1e-5, (0.8, 0.9))]
    apply_lr(optimizer, 0.5)
    assert [g['lr'] for g in optimizer.param_groups] == pytest.approx([5e-4, 5e-4, 2.5e-4])


@pytest.mark.parametrize('disable', [r'^wte', [r'^wte', r'norm\.bias']])
def test_disable_grad_by_regex(disable):
    model = Tiny()
    build_optimizer({'name': 'decoupled_lionw', 'lr': 1e-4, 'disable_grad': disable}, model)
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    assert frozen == (['wte.weight'] if isinstance(disable, str) else ['norm.bias', 'wte.weight'])


def test_frozen_parameters_are_not_updated_or_decayed():
    model = Tiny()
    optimizer = build_optimizer({'name': 'decoupled_adamw', 'lr': 0.1, 'weight_decay': 0.5, 'disable_grad': 'wte'},
                                model)
    before = model.wte.weight.detach().clone()
    model.blocks[0](model.wte(torch.tensor([1, 2]))).sum().backward()
    optimizer.step()
    torch.testing.assert_close(model.wte.weight, before, rtol=0, atol=0)
    assert model.blocks[0].weight.grad is not None


def test_adamw_is_torchs_with_lr_scaled_decay():
    model = nn.Linear(3, 1, bias=False).double()
    start = model.weight.detach().clone()
    optimizer = build_optimizer({'name': 'adamw', 'lr': 0.1, 'betas': [0.9, 0.99], 'weight_decay': 0.5}, model)
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.param_groups[0]['fused'] is False  # CPU parameters: no fused kernel
    model.weight.grad = torch.zeros_like(model.weight)
    optimizer.step()
    torch.testing.assert_close(model.weight.detach(), start * (1 - 0.1 * 0.5))  # torch's decay: lr * weight_decay


@pytest.mark.parametrize(
    ('cfg', 'message'),
    [
        ({'name': 'decoupled_adamw', 'beta': [0.9, 0.95]},
         "unknown key 'optimizer.beta'; did you mean 'optimizer.betas'\\? \\(accepted: amsgrad, betas, disable_grad, "
         'eps, lr, name, param_groups, weight_decay\\)'),
        ({'name': 'decoupled_lionw', 'eps': 1e-8}, "unknown key 'optimizer.eps'"),
        ({'name': 'decoupled_adam'},
         "unknown optimizer.name='decoupled_adam'; did you mean 'decoupled_adamw'\\? "
         '\\(registered: adamw, decoupled_adamw, decoupled_lionw\\)'),
        ({'lr': 1e-3}, 'optimizer.name is required'),
        ({'name': 'adamw', 'param_groups': [{'param_str_match': 'bias', 'lrr': 0.1}]},
         "unknown key 'optimizer.param_groups\\[0\\].lrr'; did you mean 'optimizer.param_groups\\[0\\].lr'"),
        ({'name': 'adamw', 'param_groups': [{'lr': 0.1}]}, 'must be a mapping with a param_str_match'),
        ({'name': 'adamw', 'disable_grad': '(unclosed'}, 'optimizer.disable_grad: invalid regex'),
        ({'name': 'decoupled_adamw', 'betas': [0.9, 1.5]}, 'betas must be two numbers in \\[0, 1\\]'),
    ],
)
def test_config_errors(cfg, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer(cfg, Tiny())
