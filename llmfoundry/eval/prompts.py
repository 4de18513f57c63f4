"""Few-shot sampling and the token-level helpers every task type shares, with llm-foundry's semantics."""

from __future__ import annotations

import random
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase


def fewshot_indices(size: int, num_fewshot: int, example_idx: int, rng: random.Random) -> set[int]:
    """The few-shot examples shown before example `example_idx`.

    llm-foundry draws them without replacement from one generator per task and shot count, seeded with
    `fewshot_random_seed` and consumed example by example in file order; a draw that hits the example itself
    trades it for one more single draw. The order of the returned set is the order they are shown in (Python's
    set iteration order, as in llm-foundry), so callers must iterate it, not sort it.
    """
    count = min(size - 1, num_fewshot)
    chosen = set(rng.sample(range(size), count))
    if example_idx not in chosen:
        return chosen
    chosen.remove(example_idx)
    if len(chosen) >= size - 1:
        return chosen
    while True:
        extra = rng.choice(range(size))
        if extra not in chosen and extra != example_idx:
            chosen.add(extra)
            return chosen


def needs_prefix_space(tokenizer: PreTrainedTokenizerBase) -> bool:
    """GPT-2 style tokenizers encode ' a' as one token: continuations then get a leading space."""
    return len(tokenizer(' a', add_special_tokens=False)['input_ids']) == 1


def with_space(text: str, prefix_space: bool) -> str:
    return f' {text}' if prefix_space and not text.startswith(' ') else text


def encode_preamble(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Prompt and few-shot examples with the tokenizer's special tokens (a BOS), less a trailing EOS that
    some tokenizers add, since the example's own context follows."""
    ids = list(tokenizer(text)['input_ids'])
    if tokenizer.eos_token_id is not None and len(ids) > 1 and ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]
    return ids


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)['input_ids'])


@dataclass(frozen=True)
class Request:
    """One sequence to score: the model reads context + continuation and is judged on the continuation."""
    context: list[int]
    continuation: list[int]

    @property
    def tokens(self) -> list[int]:
        return self.context + self.continuation


def trimmed(context: list[int], continuation: list[int], max_seq_len: int, where: str) -> Request:
    """Drop context tokens from the left until context + continuation fit in max_seq_len."""
    room = max_seq_len - len(continuation)
    if room < 0:
        raise ValueError(f'{where}: the continuation ({len(continuation)} tokens) is longer than max_seq_len '
                         f'({max_seq_len})')
    if len(context) + len(continuation) > max_seq_len:
        context = context[len(context) - room:] if room else []
    return Request(context, continuation)
