"""Initialisation: documented statistics per scheme, and weights that do not depend on where they were made."""

from __future__ import annotations

import math

import pytest
import torch

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

D, LAYERS = 256, 4


def model_with(init_config: dict, **overrides) -> MPTForCausalLM:
    config = MPTConfig(d_model=D, n_heads=4, n_layers=LAYERS, vocab_size=512, max_seq_len=64, no_bias=False,
                       attn_config={'attn_impl': 'torch', 'alibi': True}, init_config=init_config, **overrides)
    torch.manual_seed(0)
    return MPTForCausalLM(config)


def std_of(model: MPTForCausalLM, suffix: str) -> float:
    values = [p.detach().flatten() for n, p in model.named_parameters() if n.endswith(suffix)]
    return torch.cat(values).std().item()


SMALL = math.sqrt(2 / (5 * D))
RELU_FAN_IN = math.sqrt(2 / D)  # kaiming normal, a=0, relu, fan_in = d_model


@pytest.mark.parametrize(
    ('init_config', 'expected'),
    [
        ({}, {'Wqkv.weight': RELU_FAN_IN, 'out_proj.weight': RELU_FAN_IN / math.sqrt(2 * LAYERS),
              'up_proj.weight': RELU_FAN_IN, 'down_proj.weight': math.sqrt(2 / (4 * D)) / math.sqrt(2 * LAYERS),
              'wte.weight': RELU_FAN_IN}),
        ({'init_div_is_residual': False}, {'out_proj.weight': RELU_FAN_IN}),
        ({'init_div_is_residual': 4.0}, {'out_proj.weight': RELU_FAN_IN / 4}),
        ({'name': 'kaiming_uniform_', 'fan_mode': 'fan_out', 'init_nonlinearity': 'linear'},
         {'up_proj.weight': 1 / math.sqrt(4 * D)}),
        ({'name': 'small_init_'}, {'Wqkv.weight': SMALL, 'out_proj.weight': SMALL / math.sqrt(2 * LAYERS)}),
        ({'name': 'neox_init_'}, {'Wqkv.weight': SMALL, 'down_proj.weight': SMALL / (LAYERS / math.sqrt(10))}),
        ({'name': 'baseline_', 'init_std': 0.02, 'emb_init_std': 0.5},
         {'Wqkv.weight': 0.02, 'out_proj.weight': 0.02 / math.sqrt(2 * LAYERS), 'wte.weight': 0.5}),
        ({'name': 'xavier_normal_', 'init_gain': 1.0, 'init_div_is_residual': False},
         # fused Wqkv: each of q, k, v is its own (D x D) block, so fan_out = D, not 3 D
         {'Wqkv.weight': math.sqrt(2 / (D + D)), 'up_proj.weight': math.sqrt(2 / (D + 4 * D))}),
        ({'name': 'default_'}, {'Wqkv.weight': 1 / math.sqrt(D) / math.sqrt(3), 'wte.weight': 1.0}),
        ({'emb_init_uniform_lim': 0.1}, {'wte.weight': 0.1 / math.sqrt(3)}),
    ],
)
def test_init_schemes_give_documented_statistics(init_config, expected):
    model = model_with(init_config)
    for suffix, std in expected.items():
        assert std_of(model, suffix) == pytest.approx(std, rel=0.04), suffix
    for name, param in model.named_parameters():
        if 'norm' in name or 'ln' in name:
            assert torch.all(param == (1.0 if name.endswith('weight') else 0.0)), name
        elif name.endswith('bias') and init_config.get('name') != 'default_':
            assert torch.all(param == 0), name


def test_meta_then_materialise_equals_cpu_init_and_seed_matters():
    def build(device: str, seed: int) -> MPTForCausalLM:
        config = MPTConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=64, init_device=device,
                           attn_config={'attn_impl': 'torch', 'alibi': True})
        torch.manual_seed(seed)
        return MPTForCausalLM(config)

    on_cpu = build('cpu', 7)
    on_meta = build('meta', 7)
    assert all(p.is_meta for p in on_meta.parameters())
    on_meta.to_empty(device='cpu')
    on_meta.reset_parameters()
    for (name, a), (_, b) in zip(on_cpu.named_parameters(), on_meta.named_parameters()):
        assert torch.equal(a, b), name
    other = build('cpu', 8)
    assert not torch.equal(other.transformer.wte.weight, on_cpu.transformer.wte.weight)
    # Each parameter has its own generator: re-initialising one module reproduces it alone.
    snapshot = on_cpu.transformer.blocks[1].attn.Wqkv.weight.clone()
    with torch.no_grad():
        on_cpu.transformer.blocks[1].attn.Wqkv.weight.zero_()
    on_cpu.reset_parameters()
    assert torch.equal(on_cpu.transformer.blocks[1].attn.Wqkv.weight, snapshot)
