"""Running the model on ICL examples: logits at the continuation positions, or a greedy generation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from .prompts import Request

AUTOCAST = {'amp_bf16': torch.bfloat16, 'amp_fp16': torch.float16}


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """The eval's `precision` as autocast on CUDA; CPU evaluation always runs in fp32."""
    dtype = AUTOCAST.get(precision)
    if dtype is None or device.type != 'cuda':
        yield
        return
    with torch.autocast('cuda', dtype=dtype):
        yield


@torch.no_grad()
def continuation_logits(model: nn.Module, requests: list[Request], batch_size: int, pad_id: int,
                        device: torch.device, precision: str) -> list[torch.Tensor]:
    """fp32 logits [len(continuation), vocab] predicting each request's continuation tokens.

    Requests are batched with right padding and an attention mask, so padding never reaches the positions read.
    """
    out: list[torch.Tensor] = []
    for start in range(0, len(requests), batch_size):
        chunk = requests[start:start + batch_size]
        width = max(len(r.tokens) for r in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, request in enumerate(chunk):
            if not request.context:
                raise ValueError('an ICL example has no context tokens to condition on (empty context and no BOS '
                                 'token, or max_seq_len too short)')
            ids[row, :len(request.tokens)] = torch.tensor(request.tokens)
            mask[row, :len(request.tokens)] = True
        with precision_context(precision, device):
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        for row, request in enumerate(chunk):
            first = len(request.context) - 1  # the logits at position i predict token i + 1
            out.append(logits[row, first:first + len(request.continuation)].float().cpu())
    return out


class _StopOnText(StoppingCriteria):
    """Stop once the generated text (after the prompt) contains one of the stop sequences."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_len: int, stops: list[str]) -> None:
        self.tokenizer, self.prompt_len, self.stops = tokenizer, prompt_len, stops

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        text = self.tokenizer.decode(input_ids[0, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([any(stop in text for stop in self.stops)], device=input_ids.device)


@torch.no_grad()
def generate_answer(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: list[int], *,
                    max_new_tokens: int, stop_sequences: list[str] | None, generation_kwargs: dict,
                    device: torch.device, precision: str) -> str:
    """The text the model generates after `prompt` (greedy unless generation_kwargs ask otherwise)."""
    if not prompt:
        raise ValueError('a generation example has no prompt tokens (empty context and no BOS token)')
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = {'max_new_tokens': max_new_tokens, 'do_sample': False, 'use_cache': True,
              'eos_token_id': tokenizer.eos_token_id, 'pad_token_id': pad_id, **generation_kwargs}
    if stop_sequences:
        kwargs['stopping_criteria'] = StoppingCriteriaList([_StopOnText(tokenizer, len(prompt), stop_sequences)])
    with precision_context(precision, device):
        generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
    return tokenizer.decode(generated[0, len(prompt):], skip_special_tokens=True)
