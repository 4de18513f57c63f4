"""Batched generation: equal to transformers' native MPT on the same weights, and to one prompt at a time."""

from __future__ import annotations

import pytest
import torch
from inference_helpers import LLAMA_SHAPED, MPT, tiny_mpt, word_tokenizer
from transformers import MptForCausalLM, pipeline

from llmfoundry.export import export_to_hf
from llmfoundry.inference.generation import GenerationSettings, generate, left_pad, until_stop
from llmfoundry.inference.options import read_prompts, str2bool

GREEDY = GenerationSettings(max_new_tokens=32, do_sample=False)
PROMPTS = ['w1 w2 w3', 'w7 w8 w9 w10 w11 w12 w13 w14 w15', 'w30 w31 w32 w33 w34 w35']


def test_left_pad_right_aligns_rows() -> None:
    ids, mask = left_pad([[5, 6], [7, 8, 9], []], pad_id=0)
    assert ids.tolist() == [[0, 5, 6], [7, 8, 9], [0, 0, 0]]
    assert mask.tolist() == [[0, 1, 1], [1, 1, 1], [0, 0, 0]]
    assert until_stop([4, 3, 9, 3], [3]) == [4, 3]
    assert until_stop([4, 5], [3]) == [4, 5]


def test_greedy_equals_native_mpt_on_the_exported_weights(tmp_path) -> None:
    tokenizer = word_tokenizer()
    ours = tiny_mpt(seed=3)
    assert export_to_hf(ours, tmp_path / 'hf') == 'mpt'
    theirs = MptForCausalLM.from_pretrained(tmp_path / 'hf').eval()
    mine, native = generate(ours, tokenizer, PROMPTS, GREEDY), generate(theirs, tokenizer, PROMPTS, GREEDY)
    assert [len(g.token_ids) for g in mine.generations] == [32, 32, 32]  # no EOS: the whole 32 compared
    assert [g.token_ids for g in mine.generations] == [g.token_ids for g in native.generations]
    assert mine.new_tokens == 96 and mine.tokens_per_second > 0


@pytest.mark.parametrize('config', [MPT, LLAMA_SHAPED], ids=['alibi', 'rope_gqa'])
def test_left_padded_batch_equals_one_by_one(config) -> None:
    tokenizer, model = word_tokenizer(), tiny_mpt(config, seed=3)
    batch = generate(model, tokenizer, PROMPTS, GREEDY).generations
    alone = [generate(model, tokenizer, [prompt], GREEDY).generations[0] for prompt in PROMPTS]
    assert [g.token_ids for g in batch] == [g.token_ids for g in alone]
    assert [g.text for g in batch] == [g.text for g in alone]
    assert min(len(set(g.token_ids)) for g in batch) > 3  # varied text, not one token repeated


def test_eos_ends_a_generation_and_no_cache_gives_the_same_tokens() -> None:
    tokenizer, model = word_tokenizer(), tiny_mpt(seed=2)
    full = generate(model, tokenizer, PROMPTS[:1], GREEDY).generations[0].token_ids
    stop = full[5]
    settings = GenerationSettings(max_new_tokens=32, do_sample=False, eos_token_id=stop)
    cut = generate(model, tokenizer, PROMPTS[:1], settings).generations[0].token_ids
    assert cut == full[:full.index(stop) + 1]
    no_cache = GenerationSettings(max_new_tokens=32, do_sample=False, use_cache=False)
    assert generate(model, tokenizer, PROMPTS[:1], no_cache).generations[0].token_ids == full


def test_sampling_follows_the_seed() -> None:
    tokenizer, model = word_tokenizer(), tiny_mpt(seed=3)
    settings = GenerationSettings(max_new_tokens=16, do_sample=True, temperature=2.0, top_k=20, top_p=0.9)
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        runs.append(generate(model, tokenizer, PROMPTS[:1], settings).generations[0].token_ids)
    assert runs[0] == runs[1] != runs[2]


def test_pipeline_text_generation_on_an_exported_folder(tmp_path) -> None:
    tokenizer, ours = word_tokenizer(), tiny_mpt(seed=4)
    export_to_hf(ours, tmp_path / 'hf', tokenizer=tokenizer)
    generator = pipeline('text-generation', model=str(tmp_path / 'hf'), device='cpu')
    assert type(generator.model).__name__ == 'MptForCausalLM'
    out = generator(PROMPTS[0], max_new_tokens=12, do_sample=False, return_full_text=False)
    expected = generate(ours, tokenizer, PROMPTS[:1], GenerationSettings(max_new_tokens=12, do_sample=False))
    assert out[0]['generated_text'].strip() == expected.generations[0].text


def test_prompt_files_and_boolean_flags(tmp_path) -> None:
    (tmp_path / 'p.txt').write_text('w4 w5\nw6', encoding='utf-8')
    assert read_prompts(['w1', f'file::{tmp_path / "p.txt"}']) == ['w1', 'w4 w5\nw6']
    with pytest.raises(FileNotFoundError, match='missing.txt'):
        read_prompts([f'file::{tmp_path / "missing.txt"}'])
    assert [str2bool(v) for v in ('true', 'False', '1', 'n', True)] == [True, False, True, False, True]
