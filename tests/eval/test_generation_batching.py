"""Generation tasks run batch_size prompts at a time with left padding: each answer equals the one-prompt-at-a-time
answer and a cache-free argmax reference, whatever its batch neighbours do (stop early, hit EOS, run long)."""

from __future__ import annotations

import pytest
import torch
from eval_helpers import EOS, char_tokenizer, greedy, ids, tiny_mpt

from llmfoundry.eval.scoring import generate_answer, generate_answers
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

PROMPTS = ['say a', 'hello there', 'x', 'the quick brown fox', 'ab cd', 'q', 'zz top\n', 'mid length']
CPU = torch.device('cpu')


def alibi_mpt(vocab: int, seed: int) -> MPTForCausalLM:
    torch.manual_seed(seed)
    config = MPTConfig(d_model=32, n_heads=2, n_layers=2, vocab_size=vocab, max_seq_len=256,
                       attn_config={'attn_impl': 'torch', 'alibi': True}, learned_pos_emb=False)
    return MPTForCausalLM(config).eval()


def reference(model: MPTForCausalLM, tokenizer, prompt: list[int], steps: int, stops: list[str]) -> str:
    """Argmax decoding without a cache, cut after the first stop sequence or before EOS."""
    text = ''
    for token in greedy(model, prompt, steps, stop=tokenizer.convert_tokens_to_ids(EOS)):
        text += tokenizer.decode([token])
        if any(stop in text for stop in stops):
            break
    return text


@pytest.mark.parametrize('build', [tiny_mpt, alibi_mpt], ids=['learned_positions', 'alibi'])
def test_batched_answers_equal_one_at_a_time(build) -> None:
    tokenizer = char_tokenizer()
    prompts = [ids(tokenizer, p) for p in PROMPTS]
    stops = ['\n', 'q']
    lengths = set()
    for seed in (0, 1):
        model = build(len(tokenizer), seed)
        kwargs = dict(max_new_tokens=10, stop_sequences=stops, generation_kwargs={}, device=CPU, precision='fp32')
        batched = generate_answers(model, tokenizer, prompts, batch_size=3, **kwargs)
        single = [generate_answer(model, tokenizer, p, **kwargs) for p in prompts]
        expected = [reference(model, tokenizer, p, 10, stops) for p in prompts]
        assert batched == single == expected, (seed, batched, single, expected)
        lengths |= {len(answer) for answer in batched}
    assert len(lengths) > 2, lengths  # rows of one batch really stopped at different lengths


def test_empty_prompt_is_refused() -> None:
    tokenizer = char_tokenizer()
    with pytest.raises(ValueError, match='no prompt tokens'):
        generate_answers(tiny_mpt(len(tokenizer)), tokenizer, [[1], []], batch_size=2, max_new_tokens=2,
                         stop_sequences=None, generation_kwargs={}, device=CPU, precision='fp32')
