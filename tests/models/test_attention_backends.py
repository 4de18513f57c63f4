"""The attention kernels agree: torch (SDPA) vs FlexAttention on CPU; flash-attn vs torch on CUDA."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM, modeling_mpt
from llmfoundry.models.mpt import attention as attention_module

VOCAB = 80
CASES = {
    'alibi-mha': {'alibi': True},
    'rope-gqa': {'rope': True, 'attn_type': 'grouped_query_attention', 'kv_n_heads': 2},
    'alibi-window-softcap-packed': {'alibi': True, 'sliding_window_size': 5, 'attn_logit_softcapping': 3.0,
                                    'attn_uses_sequence_id': True},
}
# FlexAttention works in blocks of 128 tokens: shorter than one block, one block, and a partial second block.
LENGTHS = [40, 128, 150]


def build(attn_impl: str, device: str = 'cpu', max_seq_len: int = 64, **attn) -> MPTForCausalLM:
    torch.manual_seed(0)
    config = MPTConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=VOCAB, max_seq_len=max_seq_len, no_bias=True,
                       attn_config={'attn_impl': attn_impl, **attn})
    return MPTForCausalLM(config).to(device).eval()


def packed_sequence_id(batch: int, length: int) -> torch.Tensor:
    """Row 0 holds three documents (the last one runs to the end), other rows one."""
    first = torch.tensor([0] * 10 + [1] * 20 + [2] * (length - 30))
    return torch.stack([first] + [torch.zeros(length, dtype=torch.long)] * (batch - 1))


def left_padding(batch: int, length: int) -> torch.Tensor:
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, :7] = 0
    return mask


@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('length', LENGTHS)
@pytest.mark.parametrize('case', CASES)
def test_flex_matches_torch_on_cpu_with_and_without_packing_and_padding(case, length, batch):
    generator = torch.Generator().manual_seed(length + batch)
    ids = torch.randint(0, VOCAB, (batch, length), generator=generator)
    padding = left_padding(batch, length)
    torch_model, flex_model = build('torch', **CASES[case]), build('flex', **CASES[case])
    with torch.no_grad():
        for kwargs in ({}, {'sequence_id': packed_sequence_id(batch, length)}, {'attention_mask': padding}):
            expected, actual = torch_model(ids, **kwargs).logits, flex_model(ids, **kwargs).logits
            kept = padding.bool() if 'attention_mask' in kwargs else slice(None)
            error = (actual[kept] - expected[kept]).abs().max().item()
            assert error <= 1e-5, f'{case} length={length} batch={batch} {list(kwargs)}: max |flex - torch| = {error}'


FLEX_ON_OTHER_ISA = r'''
import sys, torch
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
def build(impl):
    torch.manual_seed(0)
    return MPTForCausalLM(MPTConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=80, max_seq_len=64, no_bias=True,
                                    attn_config={'attn_impl': impl, 'alibi': True})).eval()
ids = torch.randint(0, 80, (2, 40))
with torch.no_grad():
    print((build('flex')(ids).logits - build('torch')(ids).logits).abs().max().item())
'''


@pytest.mark.parametrize('capability', ['avx2', 'default'])
def test_flex_is_right_on_cpus_with_other_vector_units(capability, tmp_path):
    """ATEN_CPU_CAPABILITY makes PyTorch (and its compiler) use the kernels of an older CPU. On AVX2, the
    compiled CPU FlexAttention kernel of torch 2.14.1 returned NaN for this very input."""
    if capability == 'avx2' and torch.backends.cpu.get_cpu_capability() == 'DEFAULT':
        pytest.skip('this CPU has no AVX2')
    env = {**os.environ, 'ATEN_CPU_CAPABILITY': capability, 'TORCHINDUCTOR_CACHE_DIR': str(tmp_path)}
    result = subprocess.run([sys.executable, '-c', FLEX_ON_OTHER_ISA], env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    error = float(result.stdout.split()[-1])
    assert error <= 1e-5, f'ATEN_CPU_CAPABILITY={capability}: max |flex - torch| = {error}'


def test_flex_block_mask_is_built_once_per_forward_and_reused_without_documents(monkeypatch):
    from torch.nn.attention import flex_attention as flex_module

    calls = []
    real = flex_module.create_block_mask
    monkeypatch.setattr(flex_module, 'create_block_mask', lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(attention_module, '_STATIC_BLOCK_MASKS', {})
    torch.manual_seed(0)
    config = MPTConfig(d_model=32, n_heads=4, n_layers=4, vocab_size=VOCAB, max_seq_len=48, no_bias=True,
                       attn_config={'attn_impl': 'flex', 'alibi': True, 'attn_uses_sequence_id': True})
    model, reference = MPTForCausalLM(config).eval(), build_like_torch(config)
    ids = torch.randint(0, VOCAB, (2, 40))

    def built_per_forward(**kwargs) -> int:
        calls.clear()
        with torch.no_grad():
            error = model(ids, **kwargs).logits - reference(ids, **kwargs).logits
        kept = kwargs['attention_mask'].bool() if 'attention_mask' in kwargs else slice(None)  # padded rows differ
        assert error[kept].abs().max() <= 1e-5  # the shared (and the reused) mask is the right one
        return len(calls)

    assert built_per_forward() == 1  # 4 layers, one mask
    assert built_per_forward() == 0  # same shape, no documents or padding: the previous forward's mask
    assert built_per_forward(sequence_id=packed_sequence_id(2, 40)) == 1  # per batch: built every forward
    assert built_per_forward(sequence_id=packed_sequence_id(2, 40)) == 1
    assert built_per_forward(attention_mask=left_padding(2, 40)) == 1
    ids = ids[:, :33]
    assert built_per_forward() == 1  # another shape


def build_like_torch(config: MPTConfig) -> MPTForCausalLM:
    """The same weights with the torch kernel (MPT's init depends only on the seed drawn at construction)."""
    torch.manual_seed(0)
    return MPTForCausalLM(MPTConfig(**{**config.to_dict(), 'attn_config': {**config.attn_config,
                                                                          'attn_impl': 'torch'}})).eval()


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
    sequence_id = packed_sequence_id(2, 40).cuda()
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
        expected = reference(ids, sequence_id=sequence_id).logits.float()
        actual = fast(ids, sequence_id=sequence_id).logits.float()
    torch.testing.assert_close(actual, expected, rtol=0, atol=5e-2)


# ----- flash-attn versions: stubs with the signatures of each release, run on CPU ---------------------------
def _flash_v2_4(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), alibi_slopes=None,
                deterministic=False, return_attn_probs=False):
    return _record('func', locals())


def _flash_varlen_v2_4(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                       softmax_scale=None, causal=False, window_size=(-1, -1), alibi_slopes=None,
                       deterministic=False, return_attn_probs=False):
    return _record('varlen', locals())


def _flash_varlen_v2_5(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                       softmax_scale=None, causal=False, window_size=(-1, -1), alibi_slopes=None,
                       deterministic=False, return_attn_probs=False, block_table=None):
    return _record('varlen', locals())


def _flash_v2_6(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                alibi_slopes=None, deterministic=False, return_attn_probs=False):
    return _record('func', locals())


def _flash_varlen_v2_6(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                       softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                       deterministic=False, return_attn_probs=False, block_table=None):
    return _record('varlen', locals())


FLASH_VERSIONS = {'2.4': (_flash_v2_4, _flash_varlen_v2_4), '2.5': (_flash_v2_4, _flash_varlen_v2_5),
                  '2.6': (_flash_v2_6, _flash_varlen_v2_6)}
_calls: list[tuple[str, dict]] = []


def _record(entry: str, args: dict) -> torch.Tensor:
    """Records every argument the stub holds (given or its default) except q, k, v; returns zeros like q."""
    _calls.append((entry, {k: v for k, v in args.items() if k not in ('q', 'k', 'v')}))
    return torch.zeros_like(args['q'])


def _stub_flash(monkeypatch, version: str) -> None:
    func, varlen = FLASH_VERSIONS[version]
    monkeypatch.setattr(attention_module, 'flash_attn_func', func)
    monkeypatch.setattr(attention_module, 'flash_attn_varlen_func', varlen)
    monkeypatch.setattr(attention_module, '_warned', set())
    _calls.clear()


def _ctx(softcap=None, alibi=False, window=-1, packed=False, batch=2, seq=6, heads=4):
    return attention_module.AttentionContext(
        query_len=seq, past_len=0, alibi_slopes=torch.full((heads,), 0.5) if alibi else None, rotary=None,
        key_padding_mask=None, sequence_id=torch.zeros(batch, seq, dtype=torch.long) if packed else None,
        sliding_window=window, softcap=softcap, impl='flash')


def _run_flash(ctx: attention_module.AttentionContext) -> dict:
    q = k = v = torch.randn(2, 4, 6, 8)  # (batch, heads, seq, head_dim)
    out = attention_module._flash_attention(q, k, v, ctx, scale=0.25, dropout_p=0.0)
    assert out.shape == q.shape
    (entry, received), = _calls
    assert entry == ('varlen' if ctx.sequence_id is not None else 'func')
    return received


@pytest.mark.parametrize('packed', [False, True])
@pytest.mark.parametrize('version', FLASH_VERSIONS)
def test_flash_call_fits_each_flash_attn_version(monkeypatch, version, packed):
    _stub_flash(monkeypatch, version)
    received = _run_flash(_ctx(alibi=True, window=3, packed=packed))
    assert received['window_size'] == (3, 3) and received['alibi_slopes'] is not None and received['causal']
    assert received.get('softcap', 0.0) == 0.0  # 2.6 holds its default: no softcap configured
    _calls.clear()
    received = _run_flash(_ctx(packed=packed))  # no optional feature in use: defaults everywhere
    assert received['window_size'] == (-1, -1) and received['alibi_slopes'] is None


@pytest.mark.parametrize('packed', [False, True])
def test_flash_passes_softcap_to_flash_attn_2_6(monkeypatch, packed):
    _stub_flash(monkeypatch, '2.6')
    assert _run_flash(_ctx(softcap=3.0, packed=packed))['softcap'] == 3.0


@pytest.mark.parametrize('version', ['2.4', '2.5'])
def test_softcap_on_flash_attn_without_it_is_an_error_in_the_kernel(monkeypatch, version):
    _stub_flash(monkeypatch, version)
    with pytest.raises(RuntimeError, match=r'lacks softcap= \(added in flash-attn 2\.6\).*upgrade flash-attn'):
        _run_flash(_ctx(softcap=3.0))
    assert not _calls


@pytest.mark.parametrize('version', ['2.4', '2.5'])
def test_softcap_on_old_flash_attn_runs_another_kernel_with_one_warning(monkeypatch, version):
    _stub_flash(monkeypatch, version)
    cuda = torch.device('cuda')
    needs = attention_module.flash_features_needed(_ctx(softcap=3.0, alibi=True))
    assert needs == ('alibi_slopes', 'softcap')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(2):
            assert attention_module.resolve_attn_impl('flash', cuda, False, dropout=False, needs=needs) == 'flex'
            assert attention_module.resolve_attn_impl('flash', cuda, False, dropout=True, needs=needs) == 'torch'
        assert attention_module.resolve_attn_impl('flash', cuda, False, dropout=False, needs=('alibi_slopes',)) \
            == 'flash'
    assert [str(w.message) for w in caught] == [
        "attn_impl='flash': the installed flash-attn lacks softcap= (added in flash-attn 2.6); "
        "running attn_impl='flex' instead.",
        "attn_impl='flash': the installed flash-attn lacks softcap= (added in flash-attn 2.6), and FlexAttention "
        "has no attention dropout (attn_pdrop > 0 while training); running attn_impl='torch' instead."]


def test_softcap_on_flash_attn_2_6_runs_flash(monkeypatch):
    _stub_flash(monkeypatch, '2.6')
    needs = attention_module.flash_features_needed(_ctx(softcap=3.0, alibi=True, window=4))
    assert attention_module.resolve_attn_impl('flash', torch.device('cuda'), False, dropout=True, needs=needs) \
        == 'flash'


def test_flash_fallback_without_flash_attn_keeps_dropout(monkeypatch):
    """FlexAttention has no dropout: while training with attn_pdrop > 0 the fallback on CUDA is torch (SDPA)."""
    monkeypatch.setattr(attention_module, 'flash_attn_func', None)
    monkeypatch.setattr(attention_module, '_warned', set())
    cuda = torch.device('cuda')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert attention_module.resolve_attn_impl('flash', cuda, False, dropout=True) == 'torch'
        assert attention_module.resolve_attn_impl('flash', cuda, False, dropout=False) == 'flex'
        assert attention_module.resolve_attn_impl('flash', cuda, True, dropout=True) == 'torch'  # decoding
    assert [str(w.message) for w in caught] == [
        "attn_impl='flash': flash-attn is not installed (pip install \"llmfoundry[gpu]\"), and FlexAttention has "
        "no attention dropout (attn_pdrop > 0 while training); running attn_impl='torch' instead.",
        "attn_impl='flash': flash-attn is not installed (pip install \"llmfoundry[gpu]\"); "
        "running attn_impl='flex' instead."]


def test_training_with_dropout_runs_torch_when_flash_attn_is_missing(monkeypatch):
    """Through the model: it picks the kernel knowing it trains with dropout (device given as CUDA)."""
    monkeypatch.setattr(attention_module, 'flash_attn_func', None)
    monkeypatch.setattr(attention_module, '_warned', set())
    ran = []
    monkeypatch.setattr(attention_module, '_flex_attention', lambda *a, **k: ran.append('flex'))
    real_resolve = attention_module.resolve_attn_impl
    monkeypatch.setattr(modeling_mpt, 'resolve_attn_impl',
                        lambda requested, device, *a, **k: real_resolve(requested, torch.device('cuda'), *a, **k))
    model = build('flash', attn_pdrop=0.1).train()
    ids = torch.randint(0, VOCAB, (1, 8))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter('always')
        model(ids, labels=ids).loss.backward()
    assert ran == []
