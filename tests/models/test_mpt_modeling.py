"""MPTForCausalLM behaviour: an independent float64 reference, KV cache, padding, packing, extrapolation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

VOCAB = 96


def tiny(**overrides) -> MPTConfig:
    attn = {'attn_impl': 'torch', 'alibi': True, **overrides.pop('attn_config', {})}
    base = dict(d_model=48, n_heads=6, n_layers=2, vocab_size=VOCAB, max_seq_len=32, no_bias=True, attn_config=attn)
    return MPTConfig(**{**base, **overrides})


def build(config: MPTConfig, seed: int = 0) -> MPTForCausalLM:
    torch.manual_seed(seed)
    return MPTForCausalLM(config).eval()


ROPE_GQA_GLU = dict(
    attn_config={'alibi': False, 'rope': True, 'attn_type': 'grouped_query_attention', 'kv_n_heads': 2},
    ffn_config={'ffn_type': 'mptglu', 'ffn_act_fn': {'name': 'silu'}}, norm_type='rmsnorm',
)


# ----- an independent float64 eager implementation of the MPT forward pass ---------------------------
def reference_logits(params: dict[str, torch.Tensor], config: MPTConfig, ids: torch.Tensor) -> torch.Tensor:
    attn_cfg = config.attn_config
    heads, kv_heads, dim = config.n_heads, config.kv_n_heads, config.d_model // config.n_heads
    seq = ids.shape[1]
    i_pos = torch.arange(seq, dtype=torch.float64)[:, None]
    j_pos = torch.arange(seq, dtype=torch.float64)[None, :]

    def norm(x, prefix):
        w = params[prefix + '.weight']
        if config.norm_type.endswith('rmsnorm'):
            return x / torch.sqrt((x * x).mean(-1, keepdim=True) + config.norm_eps) * w
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + config.norm_eps) * w

    def rotate(t):  # t: (heads, seq, dim); pairs (k, k + dim/2) rotate by position * theta^(-2k/dim)
        # The cos/sin table is float32 by design, as in Llama and flash-attn; the rest runs in float64.
        freqs = 1.0 / attn_cfg['rope_theta'] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        angle = torch.arange(seq, dtype=torch.float32)[:, None] * freqs[None, :]
        cos, sin = angle.cos().double(), angle.sin().double()
        a, b = t[..., : dim // 2], t[..., dim // 2:]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)

    slopes = [2 ** (-8 * (k + 1) / 8) for k in range(8)]
    slopes = (slopes[1::2] + slopes[0::2])[:heads] if heads != 8 else slopes  # 6 heads: padded to 8
    outputs = []
    for row in ids:
        x = params['transformer.wte.weight'][row]
        for layer in range(config.n_layers):
            p = f'transformer.blocks.{layer}'
            h = norm(x, p + '.norm_1')
            qkv = h @ params[p + '.attn.Wqkv.weight'].T
            q, k, v = qkv.split([heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
            q = q.view(seq, heads, dim).transpose(0, 1)
            k = k.view(seq, kv_heads, dim).transpose(0, 1)
            v = v.view(seq, kv_heads, dim).transpose(0, 1)
            if attn_cfg['rope']:
                q, k = rotate(q), rotate(k)
            per_head = []
            for head in range(heads):
                kv = head // (heads // kv_heads)
                scores = q[head] @ k[kv].T / math.sqrt(dim)
                if attn_cfg['alibi']:
                    scores = scores + slopes[head] * (j_pos - i_pos)
                scores = scores.masked_fill(j_pos > i_pos, float('-inf'))
                per_head.append(torch.softmax(scores, dim=-1) @ v[kv])
            x = x + torch.cat(per_head, dim=-1) @ params[p + '.attn.out_proj.weight'].T
            h = norm(x, p + '.norm_2')
            if config.ffn_config['ffn_type'] == 'mptglu':
                hidden = F.silu(h @ params[p + '.ffn.gate_proj.weight'].T) * (h @ params[p + '.ffn.up_proj.weight'].T)
            else:
                hidden = F.gelu(h @ params[p + '.ffn.up_proj.weight'].T)
            x = x + hidden @ params[p + '.ffn.down_proj.weight'].T
        outputs.append(norm(x, 'transformer.norm_f') @ params['transformer.wte.weight'].T)
    return torch.stack(outputs)


@pytest.mark.parametrize('overrides', [{}, ROPE_GQA_GLU], ids=['alibi-mha-gelu', 'rope-gqa-swiglu'])
def test_logits_and_gradients_match_float64_reference(overrides):
    model = build(tiny(**overrides)).double()
    ids = torch.randint(0, VOCAB, (2, 16))
    labels = ids.clone()
    labels[:, :3] = -100
    out = model(ids, labels=labels)
    out.loss.backward()

    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    logits = reference_logits(params, model.config, ids)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
    loss.backward()

    torch.testing.assert_close(out.logits, logits.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(out.loss, loss.detach(), rtol=0, atol=1e-12)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, params[name].grad, rtol=1e-8, atol=1e-11, msg=name)


def test_loss_is_mean_over_target_tokens():
    model = build(tiny())
    ids = torch.randint(0, VOCAB, (3, 10))
    labels = ids.clone()
    labels[0, 4:] = -100
    out = model(ids, labels=labels)
    per_token = F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), reduction='none')
    targets = (labels[:, 1:] != -100).sum()
    torch.testing.assert_close(out.loss, per_token.sum() / targets)


@pytest.mark.parametrize(
    'overrides',
    [{}, ROPE_GQA_GLU, {'attn_config': {'sliding_window_size': 4, 'attn_type': 'multiquery_attention'}},
     {'attn_config': {'qk_ln': True, 'clip_qkv': 0.5, 'attn_logit_softcapping': 2.0}, 'no_bias': False},
     {'learned_pos_emb': True, 'attn_config': {'alibi': False, 'fused_qkv': False, 'qk_gn': True}}],
    ids=['alibi', 'rope-gqa', 'window-mqa', 'qkln-clip-softcap-bias', 'learned-unfused-qkgn'],
)
def test_kv_cache_decoding_equals_full_forward(overrides):
    model = build(tiny(**overrides))
    ids = torch.randint(0, VOCAB, (2, 20))
    with torch.no_grad():
        full = model(ids).logits
        prefix = model(ids[:, :12], use_cache=True)
        steps = [prefix.logits]
        cache = prefix.past_key_values
        for t in range(12, 20):
            step = model(ids[:, t:t + 1], past_key_values=cache, use_cache=True)
            cache = step.past_key_values
            steps.append(step.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=2e-5)


@pytest.mark.parametrize('overrides', [{}, ROPE_GQA_GLU], ids=['alibi', 'rope'])
def test_left_padded_batch_generates_what_each_prompt_generates_alone(overrides):
    model = build(tiny(**overrides))
    with torch.no_grad():  # sharpen the distribution so greedy picks have clear margins
        model.transformer.wte.weight.mul_(4)
    short, long = torch.randint(0, VOCAB, (1, 5)), torch.randint(0, VOCAB, (1, 9))
    batch = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), short], dim=1), long])
    mask = torch.ones_like(batch)
    mask[0, :4] = 0
    together = model.generate(batch, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    alone_short = model.generate(short, max_new_tokens=10, do_sample=False, pad_token_id=0)
    alone_long = model.generate(long, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert together[0, 9:].tolist() == alone_short[0, 5:].tolist()
    assert together[1, 9:].tolist() == alone_long[0, 9:].tolist()


def test_packed_documents_do_not_attend_to_each_other():
    model = build(tiny(attn_config={'attn_uses_sequence_id': True}))
    first, second = torch.randint(0, VOCAB, (1, 7)), torch.randint(0, VOCAB, (1, 9))
    packed = torch.cat([first, second], dim=1)
    sequence_id = torch.tensor([[0] * 7 + [1] * 9])
    with torch.no_grad():
        logits = model(packed, sequence_id=sequence_id).logits
        alone = model(second).logits
        ignoring = build(tiny())(packed, sequence_id=sequence_id).logits  # attn_uses_sequence_id off
        plain = build(tiny())(packed).logits
    # ALiBi is relative, so the second document alone sees exactly what it sees inside the pack.
    torch.testing.assert_close(logits[:, 7:], alone, rtol=0, atol=2e-5)
    torch.testing.assert_close(ignoring, plain, rtol=0, atol=0)


def test_alibi_extrapolates_past_max_seq_len_and_learned_positions_refuse():
    model = build(tiny())
    ids = torch.randint(0, VOCAB, (1, 80))  # max_seq_len is 32
    with torch.no_grad():
        long_logits = model(ids).logits
        short_logits = model(ids[:, :32]).logits
    assert torch.isfinite(long_logits).all()
    torch.testing.assert_close(long_logits[:, :32], short_logits, rtol=0, atol=2e-5)
    learned = build(tiny(learned_pos_emb=True, attn_config={'alibi': False}))
    with pytest.raises(ValueError, match='exceeds max_seq_len=32: learned position embeddings cannot extrapolate'):
        learned(ids)


def test_gradient_checkpointing_gives_the_same_gradients():
    ids = torch.randint(0, VOCAB, (2, 16))
    grads = []
    for checkpointed in (False, True):
        model = build(tiny()).train()
        if checkpointed:
            model.gradient_checkpointing_enable()
            assert model.transformer.gradient_checkpointing
        model(ids, labels=ids).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=0, msg=name)


def test_logit_scale_softcap_and_untied_head():
    base = build(tiny(tie_word_embeddings=False))
    scaled = build(tiny(tie_word_embeddings=False, logit_scale='inv_sqrt_d_model', final_logit_softcapping=0.5))
    assert 'lm_head.weight' in dict(base.named_parameters())
    ids = torch.randint(0, VOCAB, (1, 8))
    with torch.no_grad():
        expected = 0.5 * torch.tanh(base(ids).logits / math.sqrt(48) / 0.5)
        torch.testing.assert_close(scaled(ids).logits, expected)


def test_embedding_fraction_changes_gradients_not_values():
    ids = torch.randint(0, VOCAB, (1, 8))
    full, shrunk = build(tiny()), build(tiny(embedding_fraction=0.25))
    out_full, out_shrunk = full(ids, labels=ids), shrunk(ids, labels=ids)
    torch.testing.assert_close(out_shrunk.logits, out_full.logits, rtol=0, atol=0)
    out_full.loss.backward()
    out_shrunk.loss.backward()
    # The embedding's gradient through the input path is scaled by 0.25; through the tied head it is not.
    assert not torch.allclose(full.transformer.wte.weight.grad, shrunk.transformer.wte.weight.grad)
    torch.testing.assert_close(shrunk.transformer.norm_f.weight.grad, full.transformer.norm_f.weight.grad)
