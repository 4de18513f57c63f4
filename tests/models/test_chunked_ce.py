"""Chunked linear + cross-entropy (chunked_ce.py) and the fused loss installed on models (fused_loss.py): the loss,
the correct-prediction count and every gradient equal the plain path (full logits, torch's cross-entropy)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from llmfoundry.models.builders import build_model
from llmfoundry.models.chunked_ce import HeadTransform, chunked_cross_entropy
from llmfoundry.models.fused_loss import LABELS_KWARG, TokenLoss, has_fused_loss, install_fused_loss
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

VOCAB, D = 97, 24
FLOAT32_RTOL = 1e-6


def plain(hidden, weight, labels, head=None, z_loss=0.0):
    """The reference: full logits, torch's (at least) float32 cross-entropy (+ z_loss * lse^2), the argmax count."""
    head = head or HeadTransform()
    logits = F.linear(hidden, weight)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if head.scale is not None:
        logits = logits * head.scale
    if head.softcap is not None:
        logits = head.softcap * torch.tanh(logits / head.softcap)
    targets = F.pad(labels[:, 1:], (0, 1), value=-100).flatten()
    flat = logits.flatten(0, 1)
    loss = F.cross_entropy(flat, targets, ignore_index=-100, reduction='sum')
    valid = targets != -100
    loss = loss + z_loss * torch.logsumexp(flat, -1)[valid].square().sum()
    return loss, ((flat.argmax(-1) == targets) & valid).sum()


def inputs(dtype=torch.float32, rows=3, seq=13, seed=0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, seq, D, generator=generator, dtype=dtype).requires_grad_()
    weight = (torch.randn(VOCAB, D, generator=generator, dtype=dtype) * 0.3).requires_grad_()
    labels = torch.randint(0, VOCAB, (rows, seq), generator=generator)
    labels[0, 7:] = -100  # right padding
    labels[1, :4] = -100  # a masked prompt
    return hidden, weight, labels


def assert_rel_close(got: torch.Tensor, expected: torch.Tensor, rtol: float, what: str) -> None:
    """Within rtol of the tensor's largest entry (an entry's error scales with its terms, not its value)."""
    scale = expected.detach().abs().max().item()
    diff = (got.detach().double() - expected.detach().double()).abs().max().item()
    assert diff <= rtol * scale, f'{what}: max abs diff {diff:.3e}, {diff / scale:.3e} of the largest entry'


@pytest.mark.parametrize('head, z_loss', [(HeadTransform(), 0.0), (HeadTransform(), 1e-3),
                                          (HeadTransform(scale=0.7, softcap=2.5), 1e-2)])
@pytest.mark.parametrize('chunk_elements', [VOCAB * 5, VOCAB * 1000])  # several chunks (one ragged), one chunk
def test_loss_count_and_gradients_equal_plain_cross_entropy_float32(head, z_loss, chunk_elements):
    hidden, weight, labels = inputs()
    loss, correct = chunked_cross_entropy(hidden, weight, labels, head=head, z_loss=z_loss,
                                          chunk_elements=chunk_elements)
    grads = torch.autograd.grad(loss, (hidden, weight))
    ref_loss, ref_correct = plain(hidden, weight, labels, head, z_loss)
    ref_grads = torch.autograd.grad(ref_loss, (hidden, weight))
    assert loss.dtype == torch.float32 and int(correct) == int(ref_correct)
    assert_rel_close(loss, ref_loss, FLOAT32_RTOL, 'loss')
    for name, got, expected in zip(('hidden', 'weight'), grads, ref_grads):
        assert_rel_close(got, expected, FLOAT32_RTOL, name)
    # the rows of ignored targets get no gradient at all
    assert grads[0][0, 6:].abs().max() == 0 and grads[0][1, :3].abs().max() == 0


def test_float64_is_exact_to_float64_rounding():
    hidden, weight, labels = inputs(torch.float64)
    head = HeadTransform(scale=1.3, softcap=4.0)
    loss, _ = chunked_cross_entropy(hidden, weight, labels, head=head, z_loss=1e-2, chunk_elements=VOCAB * 4)
    ref, _ = plain(hidden, weight, labels, head, 1e-2)
    assert loss.dtype == torch.float64
    assert_rel_close(loss, ref, 1e-13, 'float64 loss')
    for got, expected in zip(torch.autograd.grad(loss, (hidden, weight)), torch.autograd.grad(ref, (hidden, weight))):
        assert_rel_close(got, expected, 1e-13, 'float64 gradient')


def test_bfloat16_autocast_matches_the_plain_path_within_bfloat16_tolerance():
    hidden, weight, labels = inputs()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss, _ = chunked_cross_entropy(hidden, weight, labels, chunk_elements=VOCAB * 5)
        ref_loss, _ = plain(hidden, weight, labels)
    grads = torch.autograd.grad(loss, (hidden, weight))
    ref_grads = torch.autograd.grad(ref_loss, (hidden, weight))
    assert grads[0].dtype == grads[1].dtype == torch.float32  # reached the float32 leaves through autocast's casts
    assert_rel_close(loss, ref_loss, 1e-3, 'bf16 loss')
    for name, got, expected in zip(('hidden', 'weight'), grads, ref_grads):
        assert_rel_close(got, expected, 2e-2, f'bf16 {name}')


def test_compiles_without_graph_breaks():
    hidden, weight, labels = inputs()
    compiled = torch.compile(lambda h, w, y: chunked_cross_entropy(h, w, y, chunk_elements=VOCAB * 5)[0],
                             backend='aot_eager', fullgraph=True)
    loss = compiled(hidden, weight, labels)
    grads = torch.autograd.grad(loss, (hidden, weight))
    ref_loss, _ = plain(hidden, weight, labels)
    assert_rel_close(loss, ref_loss, FLOAT32_RTOL, 'compiled loss')
    for got, expected in zip(grads, torch.autograd.grad(ref_loss, (hidden, weight))):
        assert_rel_close(got, expected, FLOAT32_RTOL, 'compiled gradient')


# ----- installed on models ------------------------------------------------------------------------------------------
def tiny_mpt(**kwargs) -> MPTForCausalLM:
    torch.manual_seed(0)
    return MPTForCausalLM(MPTConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=VOCAB, max_seq_len=16,
                                    attn_config={'attn_impl': 'torch'}, **kwargs))


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16))


def batch(seed: int = 3):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (2, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return ids, mask, ids.masked_fill(mask == 0, -100)


def fused_vs_plain(build):
    """(fused TokenLoss, its grads), (plain loss sum and argmax count, its grads) of two identical models."""
    ids, mask, labels = batch()
    fused, reference = build(), build()
    assert install_fused_loss(fused) and has_fused_loss(fused)
    out = fused(input_ids=ids, attention_mask=mask, **{LABELS_KWARG: labels})
    assert isinstance(out, TokenLoss)
    out.loss_sum.backward()
    logits = reference(input_ids=ids, attention_mask=mask).logits
    targets = F.pad(labels[:, 1:], (0, 1), value=-100).flatten()
    ref = F.cross_entropy(logits.flatten(0, 1).float(), targets, ignore_index=-100, reduction='sum')
    ref.backward()
    ref_correct = ((logits.flatten(0, 1).argmax(-1) == targets) & (targets != -100)).sum()
    assert int(out.correct) == int(ref_correct)
    assert_rel_close(out.loss_sum, ref, FLOAT32_RTOL, 'loss')
    ref_grads = dict(reference.named_parameters())
    for name, param in fused.named_parameters():
        assert_rel_close(param.grad, ref_grads[name].grad, 1e-5, name)
    # without the keyword the model is unchanged: full logits
    assert torch.equal(fused(input_ids=ids, attention_mask=mask).logits, logits)


@pytest.mark.parametrize('kwargs', [{}, {'tie_word_embeddings': False},
                                    {'logit_scale': 0.5, 'final_logit_softcapping': 3.0}])
def test_mpt_fused_loss_equals_plain_loss_and_every_gradient(kwargs):
    fused_vs_plain(lambda: tiny_mpt(**kwargs))


def test_hf_llama_fused_loss_equals_plain_loss_and_every_gradient():
    fused_vs_plain(tiny_llama)


def test_mpt_logits_to_keep_returns_the_last_positions():
    model, (ids, _, labels) = tiny_mpt(), batch()
    full = model(ids).logits
    assert torch.equal(model(ids, logits_to_keep=3).logits, full[:, -3:])
    with pytest.raises(ValueError, match='logits_to_keep'):
        model(ids, labels=labels, logits_to_keep=1)


def test_a_model_without_logits_to_keep_warns_and_keeps_plain_cross_entropy(caplog):
    class NoKeep(MPTForCausalLM):
        def forward(self, input_ids, attention_mask=None):
            return super().forward(input_ids, attention_mask=attention_mask)

    torch.manual_seed(0)
    model = NoKeep(tiny_mpt().config)
    with caplog.at_level(logging.WARNING):
        assert not install_fused_loss(model)
    assert not has_fused_loss(model) and 'no logits_to_keep' in caplog.text


def test_build_model_installs_the_fused_loss_only_for_fused_crossentropy():
    section = {'name': 'mpt_causal_lm', 'd_model': 32, 'n_heads': 4, 'n_layers': 1, 'vocab_size': VOCAB,
               'max_seq_len': 16, 'attn_config': {'attn_impl': 'torch'}}
    assert has_fused_loss(build_model({**section, 'loss_fn': 'fused_crossentropy'}))
    assert not has_fused_loss(build_model({**section, 'loss_fn': 'torch_crossentropy'}))
    assert not has_fused_loss(build_model(section))
