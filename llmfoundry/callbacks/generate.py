"""generate: sample completions of fixed prompts every `interval`, to watch a model learn to write.

Composer logs a table to W&B; here completions go to the Python log (INFO) and, on rank 0, to
`generations.jsonl` in the run folder (one object per prompt: batch, tokens, prompt, generation),
which every logger setup has and which is easy to diff across checkpoints. All ranks generate, so
sharded models (where every rank must take part in each forward) keep working; with several ranks they
generate in lockstep (transformers' `synced_gpus`: a rank whose sequences all ended, e.g. on an eos it
sampled earlier than the others, keeps running forwards until every rank is done, so each FSDP
all-gather has all ranks; transformers turns it on by itself for FSDP1 only, not FSDP2). Those extra
forwards feed one dummy token against the KV cache, so generation uses the cache (`use_cache: false`
is refused on several ranks: without a cache the finished rank's inputs stop matching its attention
mask). Sampling runs on a forked RNG so the training's random stream (dropout, data order) is the same
with or without it.
Keyword arguments other than the ones below go to `model.generate` (max_new_tokens, do_sample,
temperature, top_k, top_p, ...); they are checked against transformers' GenerationConfig up front
so a typo fails at startup, not hours into the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import torch
import torch.distributed as dist
from transformers import GenerationConfig

from llmfoundry.config.time import Time, Timestamp, crossed
from llmfoundry.config.validation import ConfigError, check_keys
from llmfoundry.interfaces import Callback, MetricLogger, TrainState
from llmfoundry.train.parallel import AUTOCAST_DTYPE

log = logging.getLogger(__name__)

def _check_generate_kwargs(kwargs: dict[str, Any]) -> None:
    check_keys(kwargs, GenerationConfig().to_dict(), 'callbacks.generate',
               hint=' Keys beyond the callback\'s own are transformers.GenerationConfig settings.')


def _interval(interval: str | int | None, batch_log_interval: int | None) -> Time:
    """`interval` is Composer's key; `batch_log_interval` (batches) is llm-foundry's older one."""
    if (interval is None) == (batch_log_interval is None):
        raise ConfigError('callbacks.generate needs exactly one of interval (e.g. 500ba) or batch_log_interval.')
    if interval is None:
        return Time.parse(f'{batch_log_interval}ba', 'callbacks.generate.batch_log_interval')
    return Time.parse(interval, 'callbacks.generate.interval')


class Generate(Callback):
    def __init__(self, prompts: list[str], interval: str | int | None = None, batch_log_interval: int | None = None,
                 batch_size: int | None = None, **generate_kwargs: Any) -> None:
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ConfigError('callbacks.generate.prompts must be a non-empty list of strings.')
        _check_generate_kwargs(generate_kwargs)
        self.prompts = list(prompts)
        self.interval = _interval(interval, batch_log_interval)
        self.batch_size = batch_size or len(self.prompts)
        self.generate_kwargs = generate_kwargs
        self._previous = Timestamp()

    def batch_start(self, state: TrainState, logger: MetricLogger) -> None:
        self._previous = state.timestamp

    def batch_end(self, state: TrainState, logger: MetricLogger) -> None:
        if not crossed(self._previous, state.timestamp, self.interval, state.max_duration):
            return
        generations = self.generate(state)
        for prompt, text in zip(self.prompts, generations):
            log.info('generate at batch %d: %r -> %r', state.timestamp.batch, prompt, text)
        if state.dist.is_main:
            self._write(state, generations)

    @torch.no_grad()
    def generate(self, state: TrainState) -> list[str]:
        """The completion (new text only) of every prompt, in order."""
        model, tokenizer, device = state.model, state.tokenizer, state.dist.device
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        was_training, padding_side = model.training, tokenizer.padding_side
        tokenizer.padding_side = 'left'  # generation appends on the right, so prompts must end aligned
        model.eval()
        dtype = AUTOCAST_DTYPE.get(state.config.precision)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        rng_devices = [device] if device.type == 'cuda' else []
        synced = dist.is_initialized() and dist.get_world_size() > 1
        kwargs = {'use_cache': True, **self.generate_kwargs}
        if synced and not kwargs['use_cache']:
            raise ConfigError('callbacks.generate.use_cache: false cannot generate on several ranks in lockstep; '
                              'remove it.')
        texts: list[str] = []
        try:
            with torch.random.fork_rng(devices=rng_devices), autocast:
                for start in range(0, len(self.prompts), self.batch_size):
                    chunk = self.prompts[start:start + self.batch_size]
                    encoded = tokenizer(chunk, return_tensors='pt', padding=True)
                    input_ids = encoded['input_ids'].to(device)  # not token_type_ids: causal LMs reject them
                    output = model.generate(input_ids=input_ids, attention_mask=encoded['attention_mask'].to(device),
                                            pad_token_id=pad_id, synced_gpus=synced, **kwargs)
                    new_tokens = output[:, input_ids.shape[1]:]
                    texts.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        finally:
            tokenizer.padding_side = padding_side
            model.train(was_training)
        return texts

    def _write(self, state: TrainState, generations: list[str]) -> None:
        path = state.run_folder / 'generations.jsonl'
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open('a', encoding='utf-8') as f:
            for prompt, text in zip(self.prompts, generations):
                record = {'batch': state.timestamp.batch, 'tokens': state.timestamp.token, 'prompt': prompt,
                          'generation': text}
                f.write(json.dumps(record, ensure_ascii=False) + '\n')
