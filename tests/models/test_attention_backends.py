"""The attention kernels agree: torch (SDPA) vs FlexAttention on CPU; flash-attn vs torch on CUDA."""

from __future__ import annotations

import warnings

import pytest
import torch

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.models.mpt import attention as attention_module

VOCAB = 80
SEQUENCE_ID = torch.tensor([[0] * 10 + [1] * 20 + [2] * 10, [0] * 40])
CASES = {
    'alibi-mha': {'alibi': True},
    'rope-gqa': {'rope': True, 'attn_type': 'grouped_query_attention', 'kv_n_heads': 2},
    'alibi-window-softcap-packed': {'alibi': True, 'sliding_window_size': 5, 'attn_logit_softcapping': 3.0,
                                    'attn_uses_sequence_id': True},
}


def build(attn_impl: str, device: str = 'cpu', **attn) -> MPTForCausalLM:
    torch.manual_seed(0)
    config = MPTConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=VOCAB, max_seq_len=64, no_bias=True,
                       attn_config={'attn_impl': attn_impl, **attn})
    return MPTForCausalLM(config).to(device).eval()


@pytest.mark.slow  # compiles FlexAttention once per case (a few seconds each on 2 cores)
@pytest.mark.parametrize('case', CASES)
def test_flex_matches_torch_on_cpu_with_packing_and_padding(case):
    ids = torch.randint(0, VOCAB, (2, 40))
    padding = torch.ones(2, 40, dtype=torch.long)
    padding[0, :7] = 0
    torch_model, flex_model = build('torch', **CASES[case]), build('flex', **CASES[case])
    with torch.no_grad():
        for kwargs in ({'sequence_id': SEQUENCE_ID}, {'attention_mask': padding}):
            expected, actual = torch_model(ids, **kwargs).logits, flex_model(ids, **kwargs).logits
            kept = padding.bool() if 'attention_mask' in kwargs else slice(None)
            torch.testing.assert_close(actual[kept], expected[kept], rtol=0, atol=1e-5)


def test_flex_refuses_to_train_on_cpu():
    model = build('flex', alibi=True).train()
    ids = torch.randint(0, VOCAB, (1, 8))
    with pytest.raises(RuntimeError, match="attn_impl='flex' cannot train on CPU.*Use attn_impl: torch"):
        model(ids, labels=ids)


def test_flash_without_flash_attn_warns_once_and_runs_torch(monkeypatch):
    monkeypatch.setattr(attention_module, 'flash_attn_func', None)
    monkeypatch.setattr(attention_module, '_warned', set())
    ids = torch.randint(0, VOCAB, (2, 12))
    flash, reference = build('flash', alibi=True), build('torch', alibi=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with torch.no_grad():
            first, second = flash(ids).logits, flash(ids).logits
    messages = [str(w.message) for w in caught if 'attn_impl' in str(w.message)]
    assert messages == ["attn_impl='flash': flash-attn is not installed (pip install \"llmfoundry[gpu]\"); "
                        "running attn_impl='torch' instead."]
    with torch.no_grad():
        torch.testing.assert_close(first, reference(ids).logits, rtol=0, atol=0)
    torch.testing.assert_close(second, first, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize('impl', ['flash', 'flex'])
@pytest.mark.parametrize('case', CASES)
def test_fast_kernels_match_torch_on_cuda_in_bf16(impl, case):
    if impl == 'flash' and attention_module.flash_attn_func is None:
        pytest.skip('flash-attn is not installed')
    ids = torch.randint(0, VOCAB, (2, 40), device='cuda')
    reference, fast = build('torch', 'cuda', **CASES[case]), build(impl, 'cuda', **CASES[case])
    sequence_id = SEQUENCE_ID.cuda()
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
        expected = reference(ids, sequence_id=sequence_id).logits.float()
        actual = fast(ids, sequence_id=sequence_id).logits.float()
    torch.testing.assert_close(actual, expected, rtol=0, atol=5e-2)
