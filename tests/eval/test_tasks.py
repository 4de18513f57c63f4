"""Each ICL task type against an independent computation: prompts written out by hand, scores from direct
unbatched forward passes and greedy decoding of a tiny MPT."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import torch
from eval_helpers import char_tokenizer, greedy, ids, log_probs, task, tiny_mpt, write_jsonl
from tiny_hf import word_tokenizer

from llmfoundry.eval.metrics import normalize_answer
from llmfoundry.eval.runner import build_task, evaluate_task
from llmfoundry.interfaces import DistInfo

ONE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device('cpu'))


@pytest.fixture(scope='module')
def tok():
    return char_tokenizer()


@pytest.fixture(scope='module')
def model(tok):
    return tiny_mpt(len(tok))


def result(results, name):
    return next(r for r in results if r.name == name)


def test_language_modeling_word_tokenizer_with_prefix_space(tmp_path: Path) -> None:
    """Words: the continuation gets a leading space (one token either way); half the continuations are the
    model's own greedy tokens, so the accuracy is neither 0 nor 1 by construction."""
    tokenizer = word_tokenizer()
    model = tiny_mpt(len(tokenizer))
    contexts = ['w1 w2 w3', 'w4 w5', 'w6 w7 w8 w9', 'w10']
    records = []
    for i, context in enumerate(contexts):
        predicted = greedy(model, ids(tokenizer, context), 2)
        words = tokenizer.convert_ids_to_tokens(predicted if i % 2 == 0 else [(t + 1) % 63 for t in predicted])
        records.append({'context': context, 'continuation': ' '.join(words)})
    uri = write_jsonl(tmp_path / 'lm.jsonl', records)
    [out] = evaluate_task(model, tokenizer, task(uri, 'language_modeling', [0]), ONE)
    right = 0
    for record in records:
        context, continuation = ids(tokenizer, record['context']), ids(tokenizer, record['continuation'])
        right += greedy(model, context, len(continuation)) == continuation
    assert right == 2
    assert out.metrics == {'InContextLearningLMAccuracy': right / 4} and out.size == 4


MC_RECORDS = [
    {'query': 'sky is', 'choices': ['blue', 'green', 'red'], 'gold': 0},
    {'query': 'grass is', 'choices': ['blue', 'green', 'red'], 'gold': 1},
    {'query': 'fire is', 'choices': ['blue', 'green', 'hot'], 'gold': 2},
]
MC_KEYS = {'prompt_string': 'quiz', 'example_delimiter': '\n', 'continuation_delimiter': ' answer ',
           'prelimiter': 'q '}


def mc_context(i: int, shots: int) -> str:
    """The prompt written out: with 2 of 3 records every example shows the other two, in index order."""
    text = 'quiz'
    if shots:
        for j in (k for k in range(3) if k != i):
            r = MC_RECORDS[j]
            text += f"\nq {r['query']} answer {r['choices'][r['gold']]}"
    return (text + f"\nq {MC_RECORDS[i]['query']} answer").rstrip() if text else ''


def test_multiple_choice_prompt_and_mean_loss_choice(tmp_path: Path, tok, model) -> None:
    uri = write_jsonl(tmp_path / 'mc.jsonl', MC_RECORDS)
    config = task(uri, 'multiple_choice', [0, 2], **MC_KEYS)
    built = build_task(config, tok)
    for shots in (0, 2):
        examples = built.examples(MC_RECORDS, shots, uri)
        for i, example in enumerate(examples):
            expected = ids(tok, mc_context(i, shots) if shots else f"quiz\nq {MC_RECORDS[i]['query']} answer")
            assert [r.context for r in example.requests] == [expected] * 3
            assert [r.continuation for r in example.requests] == [ids(tok, c) for c in MC_RECORDS[i]['choices']]
    results = evaluate_task(model, tok, config, ONE)
    for shots in (0, 2):
        right = 0
        for i, record in enumerate(MC_RECORDS):
            context = ids(tok, mc_context(i, shots) if shots else f"quiz\nq {record['query']} answer")
            losses = [-log_probs(model, context, ids(tok, c)).mean().item() for c in record['choices']]
            right += losses.index(min(losses)) == record['gold']
        assert result(results, f'task/{shots}-shot').metrics == {
            'InContextLearningMultipleChoiceAccuracy': right / 3}


def test_schema_scores_the_continuation_after_each_option(tmp_path: Path, tok, model) -> None:
    records = [{'context_options': ['the cat', 'the dog'], 'continuation': 'barks', 'gold': 1},
               {'context_options': ['a fish', 'a bird'], 'continuation': 'swims', 'gold': 0},
               {'context_options': ['ice is', 'fire is'], 'continuation': 'cold', 'gold': 0}]
    uri = write_jsonl(tmp_path / 'schema.jsonl', records)
    results = evaluate_task(model, tok, task(uri, 'schema', [0, 2], continuation_delimiter=' so '), ONE)

    def contexts(i: int, shots: int) -> list[str]:
        if not shots:
            return records[i]['context_options']
        shown = ''.join(f"{'' if n == 0 else chr(10)}{records[j]['context_options'][records[j]['gold']]} so "
                        f"{records[j]['continuation']}" for n, j in enumerate(k for k in range(3) if k != i))
        # llm-foundry: the delimiter before the option, the continuation delimiter right-stripped
        return [f'{shown}\n{option} so'.rstrip() for option in records[i]['context_options']]

    for shots in (0, 2):
        right = 0
        for i, record in enumerate(records):
            losses = [-log_probs(model, ids(tok, c), ids(tok, record['continuation'])).mean().item()
                      for c in contexts(i, shots)]
            right += losses.index(min(losses)) == record['gold']
        assert result(results, f'task/{shots}-shot').metrics == {
            'InContextLearningMultipleChoiceAccuracy': right / 3}


def simple_normalize(text: str) -> str:
    """Enough of the normalisation for lower-case letters and spaces: case, articles, whitespace."""
    return ' '.join(re.sub(r'\b(a|an|the)\b', ' ', text.lower()).split())


def test_generation_exact_match_with_aliases_and_stop_sequence(tmp_path: Path, tok, model) -> None:
    contexts = ['what is up', 'say hi', 'name it']
    greedy_text = [''.join(tok.convert_ids_to_tokens(greedy(model, ids(tok, c), 3, tok.eos_token_id)))
                   for c in contexts]
    records = [{'context': contexts[0], 'answer': greedy_text[0].strip().upper() or 'x'},
               {'context': contexts[1], 'answer': 'zzz', 'aliases': [greedy_text[1][:2].strip() or 'x']},
               {'context': contexts[2], 'answer': 'qqq'}]
    uri = write_jsonl(tmp_path / 'gen.jsonl', records)
    stop = greedy_text[2][1]  # a character the model does generate
    results = evaluate_task(model, tok, task(uri, 'generation_task_with_answers', [0],
                                             early_stopping_criteria=[stop]), ONE)
    right = 0
    for record in records:
        answers = [record['answer'], *record.get('aliases', [])]
        max_new = max(len(ids(tok, a)) for r in records for a in [r['answer'], *r.get('aliases', [])])
        output = ''.join(tok.convert_ids_to_tokens(
            greedy(model, ids(tok, record['context']), max_new, tok.eos_token_id)))
        output = output.split(stop)[0]
        right += any(simple_normalize(output).startswith(simple_normalize(a)) for a in answers)
    assert right >= 1
    assert results[0].metrics == {'InContextLearningGenerationExactMatchAccuracy': right / 3}


def test_normalize_answer_matches_triviaqa_rules() -> None:
    assert normalize_answer('The  Big_Apple!') == 'big apple'
    assert normalize_answer("an Owl's `nest`") == 'owl s nest'


def test_fewshot_draws_follow_the_seeded_generator(tok) -> None:
    """One generator per task and shot count, consumed in file order; a draw of the example itself is traded
    for one more single draw."""
    records = [{'context': f'c{"abcde"[i]}', 'continuation': 'x'} for i in range(5)]
    config = task('unused', 'language_modeling', [1], fewshot_random_seed=7, continuation_delimiter=' ')
    examples = build_task(config, tok).examples(records, 1, 'unused')
    rng = random.Random(7)
    for i, example in enumerate(examples):
        [shot] = rng.sample(range(5), 1)
        while shot == i:
            shot = rng.choice(range(5))
        expected = f"c{'abcde'[shot]} x\nc{'abcde'[i]}"
        assert example.context == ids(tok, expected)


def test_left_truncation_keeps_the_continuation(tmp_path: Path, tok) -> None:
    config = task('unused', 'language_modeling', [0], max_seq_len=6)
    [example] = build_task(config, tok).examples([{'context': 'abcdefgh', 'continuation': 'xy'}], 0, 'unused')
    assert example.context == ids(tok, 'efgh') and example.continuation == ids(tok, 'xy')


def test_categories_are_evaluated_separately(tmp_path: Path, tok, model) -> None:
    records = [{'context': 'ab', 'continuation': 'c', 'category': 'zeta'},
               {'context': 'cd', 'continuation': 'e', 'category': 'alpha'},
               {'context': 'ef', 'continuation': 'g', 'category': 'zeta'}]
    uri = write_jsonl(tmp_path / 'cat.jsonl', records)
    results = evaluate_task(model, tok, task(uri, 'language_modeling', [0], has_categories=True), ONE)
    assert [r.name for r in results] == ['task/0-shot/alpha', 'task/0-shot/zeta']
    for out in results:
        mine = [r for r in records if r['category'] == out.category]
        right = sum(greedy(model, ids(tok, r['context']), 1) == ids(tok, r['continuation']) for r in mine)
        assert out.metrics['InContextLearningLMAccuracy'] == right / len(mine) and out.size == len(mine)

