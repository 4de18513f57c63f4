"""Running the model on ICL examples: logits at the continuation positions, or batched generations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from llmfoundry.train.parallel import AUTOCAST_DTYPE

from .prompts import Request


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """The eval's `precision` as autocast on CUDA; CPU evaluation always runs in fp32."""
    dtype = AUTOCAST_DTYPE.get(precision)
    if dtype is None or device.type != 'cuda':
        yield
        return
    with torch.autocast('cuda', dtype=dtype):
        yield


def lockstep_count(model: nn.Module, count: int, device: torch.device) -> int:
    """How many batches every rank runs: the most any rank needs when `model` is sharded (each forward is then a
    collective, so a rank with fewer examples runs padding batches), else `count`. `device`: the rank's device."""
    if not (isinstance(model, FSDPModule) and dist.is_available() and dist.is_initialized()):
        return count
    most = torch.tensor([count], dtype=torch.long, device=device)
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    return int(most.item())


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
    """Per row: done once the text generated after the (left-padded) prompts contains one of the stop sequences."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_len: int, stops: list[str]) -> None:
        self.tokenizer, self.prompt_len, self.stops = tokenizer, prompt_len, stops

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([any(stop in text for stop in self.stops) for text in texts], device=input_ids.device)


def _answer_tokens(tokenizer: PreTrainedTokenizerBase, generated: list[int], stops: list[str] | None) -> list[int]:
    """A row's generated tokens up to where it alone would have stopped (EOS or a stop sequence): other rows of its
    batch may have run on, filling it with padding."""
    for end in range(1, len(generated) + 1):
        if generated[end - 1] == tokenizer.eos_token_id:
            return generated[:end]
        if stops and any(stop in tokenizer.decode(generated[:end], skip_special_tokens=True) for stop in stops):
            return generated[:end]
    return generated


@torch.no_grad()
def generate_answers(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]], *,
                     batch_size: int, max_new_tokens: int, stop_sequences: list[str] | None,
                     generation_kwargs: dict, device: torch.device, precision: str) -> list[str]:
    """The text the model generates after each prompt (greedy unless generation_kwargs ask otherwise), `batch_size`
    prompts at a time with left padding; greedy answers equal those of one prompt at a time. A sharded model
    generates in lockstep: every rank runs as many batches and steps as the busiest one (transformers' synced_gpus)."""
    if any(not prompt for prompt in prompts):
        raise ValueError('a generation example has no prompt tokens (empty context and no BOS token)')
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sharded = isinstance(model, FSDPModule) and dist.is_available() and dist.is_initialized()
    kwargs = {'max_new_tokens': max_new_tokens, 'do_sample': False, 'use_cache': True,
              'eos_token_id': tokenizer.eos_token_id, 'pad_token_id': pad_id, 'synced_gpus': sharded,
              **generation_kwargs}
    batches = [prompts[start:start + batch_size] for start in range(0, len(prompts), batch_size)]
    batches += [[[pad_id]]] * (lockstep_count(model, len(batches), device) - len(batches))  # padding, not read
    answers: list[str] = []
    for batch in batches:
        width = max(len(prompt) for prompt in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, prompt in enumerate(batch):
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        stopping = StoppingCriteriaList([_StopOnText(tokenizer, width, stop_sequences)] if stop_sequences else [])
        with precision_context(precision, device):
            generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                       stopping_criteria=stopping, **kwargs)
        for row in generated[:, width:].tolist():
            answers.append(tokenizer.decode(_answer_tokens(tokenizer, row, stop_sequences), skip_special_tokens=True))
    return answers[:len(prompts)]


def generate_answer(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: list[int], *,
                    max_new_tokens: int, stop_sequences: list[str] | None, generation_kwargs: dict,
                    device: torch.device, precision: str) -> str:
    """The text the model generates after one prompt (`generate_answers` for a batch of one)."""
    return generate_answers(model, tokenizer, [prompt], batch_size=1, max_new_tokens=max_new_tokens,
                            stop_sequences=stop_sequences, generation_kwargs=generation_kwargs, device=device,
                            precision=precision)[0]
