"""Generate for a batch of prompts with any transformers causal LM: left padding, stop tokens, tokens/s."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class GenerationSettings:
    """llm-foundry's generation flags; `eos_token_id`/`pad_token_id` default to the tokenizer's."""

    max_new_tokens: int = 100
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    do_sample: bool = True
    use_cache: bool = True
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def stop_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        eos = self.eos_token_id if self.eos_token_id is not None else tokenizer.eos_token_id
        return [] if eos is None else [eos]

    def pad_id(self, tokenizer: PreTrainedTokenizerBase) -> int:
        # Padded positions are masked, so any id works when the tokenizer has neither pad nor EOS.
        for candidate in (self.pad_token_id, tokenizer.pad_token_id, *self.stop_ids(tokenizer)):
            if candidate is not None:
                return candidate
        return 0

    def generate_kwargs(self, tokenizer: PreTrainedTokenizerBase, extra_stop_ids: list[int]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            'max_new_tokens': self.max_new_tokens, 'do_sample': self.do_sample, 'use_cache': self.use_cache,
            'repetition_penalty': self.repetition_penalty, 'pad_token_id': self.pad_id(tokenizer),
            'eos_token_id': self.stop_ids(tokenizer) + extra_stop_ids or None,
        }
        if self.do_sample:  # greedy ignores them, and transformers warns when they are set anyway
            kwargs |= {'temperature': self.temperature, 'top_p': self.top_p, 'top_k': self.top_k}
        return kwargs


@dataclass(frozen=True)
class Generation:
    prompt: str
    text: str
    token_ids: list[int]  # the new tokens, through the first stop token


@dataclass(frozen=True)
class BatchResult:
    generations: list[Generation]
    seconds: float

    @property
    def new_tokens(self) -> int:
        return sum(len(g.token_ids) for g in self.generations)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float('inf')


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with each row right-aligned, so that every row's next token comes last."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
    return ids, mask


def until_stop(tokens: list[int], stop_ids: list[int]) -> list[int]:
    """`tokens` up to and including the first stop token (what follows it is padding)."""
    for i, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[:i + 1]
    return tokens


@torch.no_grad()
def generate(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str], settings: GenerationSettings, *,
    add_special_tokens: bool = True, extra_stop_ids: list[int] | None = None,
) -> BatchResult:
    """One `model.generate` call for all `prompts` (left-padded); texts decoded without special tokens."""
    extra_stop_ids = extra_stop_ids or []
    rows = [tokenizer(p, add_special_tokens=add_special_tokens)['input_ids'] for p in prompts]
    ids, mask = left_pad(rows, settings.pad_id(tokenizer))
    device = next(model.parameters()).device
    start = time.perf_counter()
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                         **settings.generate_kwargs(tokenizer, extra_stop_ids))
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    stops = settings.stop_ids(tokenizer) + extra_stop_ids
    generations = []
    for prompt, row in zip(prompts, out[:, ids.shape[1]:].tolist(), strict=True):
        kept = until_stop(row, stops)
        generations.append(Generation(prompt, tokenizer.decode(kept, skip_special_tokens=True), kept))
    return BatchResult(generations, seconds)
