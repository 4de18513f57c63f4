"""Labels for every masking policy on hand-checked examples (ids: see conftest.VOCAB; EOS 0, <|im_start|> 3,
<|im_end|> 4, user 5, assistant 6, system 7, a 9, b 10, c 11, d 12, g 15, hi 17)."""

from __future__ import annotations

import pytest

from llmfoundry.config.validation import ConfigError
from llmfoundry.data.finetuning.masking import MaskPolicy, masked_row
from llmfoundry.data.finetuning.tokenize import tokenize_example

N = -100
CHAT = {'messages': [
    {'role': 'system', 'content': 'g'}, {'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'a b'},
    {'role': 'user', 'content': 'c'}, {'role': 'assistant', 'content': 'd'},
]}
# turn 1 prompt (10 tokens) + response (3), turn 2 prompt (6) + response (2), then EOS
CHAT_IDS = [3, 7, 15, 4, 3, 5, 17, 4, 3, 6, 9, 10, 4, 3, 5, 11, 4, 3, 6, 12, 4, 0]


def row(example, tokenizer, prompts='none', responses='last', max_seq_len=64):
    policy = MaskPolicy.from_config(prompts, responses, 'train_loader.dataset')
    return masked_row(tokenize_example(example, tokenizer), policy, tokenizer.eos_token_id, max_seq_len)


def test_prompt_response_masks_prompt_and_appends_eos(tok):
    assert row({'prompt': 'a b', 'response': 'c d'}, tok) == ([9, 10, 11, 12, 0], [N, N, 11, 12, 0])
    assert row({'prompt': 'a b', 'completion': 'c'}, tok, prompts='all') == ([9, 10, 11, 0], [9, 10, 11, 0])


def test_eos_not_doubled_when_response_ends_with_it(tok):
    assert row({'prompt': 'a', 'response': 'c <|endoftext|>'}, tok) == ([9, 11, 0], [N, 11, 0])


def test_bos_kept_once_and_masked_with_the_prompt(bos_tok):
    assert row({'prompt': 'a b', 'response': 'c'}, bos_tok) == ([2, 9, 10, 11, 0], [N, N, N, 11, 0])


@pytest.mark.parametrize(('prompts', 'responses', 'labels'), [
    ('none', 'last', [N] * 19 + [12, 4, 0]),
    ('none', 'all', [N] * 10 + [9, 10, 4] + [N] * 6 + [12, 4, 0]),
    ('all', 'last', CHAT_IDS[:10] + [N] * 3 + CHAT_IDS[13:]),
    ('all', 'all', CHAT_IDS),
    ('length>=7', 'last', CHAT_IDS[:10] + [N] * 9 + [12, 4, 0]),  # only the 10-token first prompt is long enough
    ('LENGTH>=6', 'last', CHAT_IDS[:10] + [N] * 3 + CHAT_IDS[13:]),
])
def test_chat_policies(tok, prompts, responses, labels):
    assert row(CHAT, tok, prompts, responses) == (CHAT_IDS, labels)


def test_chat_uses_the_tokenizers_own_template(tok):
    tok.chat_template = "{% for m in messages %}{{ m['role'] + ' ' + m['content'] + ' ' }}{% endfor %}" + (
        "{% if add_generation_prompt %}{{ 'assistant ' }}{% endif %}")
    example = {'messages': [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'a'}]}
    assert row(example, tok) == ([5, 17, 6, 9, 0], [N, N, N, 9, 0])


@pytest.mark.parametrize(('max_seq_len', 'expected'), [
    (5, ([9, 10, 11, 12, 0], [N, N, 11, 12, 0])),  # fits exactly
    (4, ([9, 10, 11, 12], [N, N, 11, 12])),  # EOS cut off
    (3, ([9, 10, 11], [N, N, 11])),  # one response token left
    (2, None),  # only the prompt fits: no loss token, dropped
])
def test_truncation(tok, max_seq_len, expected):
    assert row({'prompt': 'a b', 'response': 'c d'}, tok, max_seq_len=max_seq_len) == expected


def test_truncated_last_response_drops_multi_turn_example(tok):
    assert row(CHAT, tok, max_seq_len=19) is None  # all of turn 2's prompt fits, not its response
    assert row(CHAT, tok, responses='all', max_seq_len=19)[1][10:13] == [9, 10, 4]


def test_empty_response_is_unusable(tok):
    assert row({'prompt': 'a', 'response': ''}, tok) is None


@pytest.mark.parametrize(('prompts', 'responses'), [('some', 'last'), ('none', 'first'), ('length>=0', 'last'),
                                                    ('length>=x', 'last')])
def test_bad_policies(prompts, responses):
    with pytest.raises(ConfigError, match='train_loader.dataset.target_'):
        MaskPolicy.from_config(prompts, responses, 'train_loader.dataset')
