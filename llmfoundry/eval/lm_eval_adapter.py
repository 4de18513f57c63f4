"""Our models as an lm-evaluation-harness LM, registered in lm_eval as `llmfoundry` (needs the `lm-eval` extra).

`path` is whatever `llmfoundry generate` loads: a training run folder (its latest checkpoint), one of our
checkpoint folders, a Hugging Face folder or hub id. Log-likelihoods come from the ICL evaluation's own scoring
(`scoring.continuation_logits`) and generations from its `generate_answers`; lm_eval's TemplateLM splits context and
continuation exactly as its `hf` model does. The model reads at most `max_length` tokens per forward pass.
Only this module imports lm_eval; `llmfoundry lm-eval` (lm_eval_cli.py) runs lm_eval's CLI with it registered.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from llmfoundry.inference.loading import load_for_generation

from .prompts import Request, trimmed
from .scoring import continuation_logits, generate_answers

DTYPE_ALIASES = {'float32': 'fp32', 'bfloat16': 'bf16', 'float16': 'fp16'}
DEFAULT_MAX_LENGTH = 2048


@register_model('llmfoundry')
class LlmFoundryLM(TemplateLM):
    """lm_eval's `--model llmfoundry --model_args path=...[,tokenizer=...,dtype=bf16,max_length=...]`."""

    def __init__(
        self,
        path: str,
        tokenizer: str | None = None,
        config: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        trust_remote_code: bool = True,
    ) -> None:
        super().__init__()
        del max_batch_size  # only for batch_size=auto, which is refused below; lm_eval always passes it
        if str(batch_size).startswith('auto'):
            raise ValueError(
                f'llmfoundry model: batch_size={batch_size} is not supported; give a number (--batch_size N).'
            )
        self.model, self.tokenizer = load_for_generation(
            str(path),
            tokenizer=tokenizer,
            config=config,
            dtype=DTYPE_ALIASES.get(str(dtype), dtype),
            device=device,
            trust_remote_code=trust_remote_code,
        )
        self._device = next(self.model.parameters()).device
        self.batch_size = int(batch_size)
        self.max_length = int(max_length) if max_length is not None else model_max_length(self.model.config)
        self.max_gen_toks = int(max_gen_toks)
        if self.tokenizer.eos_token_id is None:
            raise ValueError(
                f'llmfoundry model: the tokenizer of {path} has no EOS token, which lm_eval uses as the '
                'context of an empty prompt and as a stop token.'
            )

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """The token before a text scored from its start: BOS when the tokenizer has one, else EOS."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace('/', '__')

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return list(self.tokenizer(string, add_special_tokens=bool(add_special_tokens))['input_ids'])

    def _loglikelihood_tokens(
        self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        """(sum of continuation log-probs, every continuation token is the argmax) per (key, context, continuation)."""
        where = f'llmfoundry model (max_length={self.max_length})'
        scored = [trimmed(context, continuation, self.max_length, where) for _, context, continuation in requests]
        results = score_requests(self.model, scored, self.batch_size, self.eot_token_id, self._device)
        for (key, _, _), result in zip(requests, results, strict=True):
            if key is not None:
                self.cache_hook.add_partial('loglikelihood', key, result)
        return results

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """The log-likelihood of each whole text after the prefix token, every token predicted once.

        Windows of `max_length` tokens: the first is the prefix token and the text's first max_length - 1 tokens;
        each later one predicts the next max_length - 1 tokens and reads the tokens before them up to max_length.
        """
        windows: list[tuple[int, Request]] = []
        for index, (text,) in enumerate(request.args for request in requests):
            pairs = get_rolling_token_windows(self.tok_encode(text), self.prefix_token_id, self.max_length - 1, 1)
            windows += [(index, Request(*make_disjoint_window(pair))) for pair in pairs]
        scores = score_requests(self.model, [w for _, w in windows], self.batch_size, self.eot_token_id, self._device)
        totals = [0.0] * len(requests)
        for (index, _), (logprob, _) in zip(windows, scores, strict=True):
            totals[index] += logprob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial('loglikelihood_rolling', request.args, total)
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Generations (greedy unless gen_kwargs sample) cut before the first `until` string; the requests that
        share gen_kwargs run in left-padded batches of batch_size."""
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(index)
        out = [''] * len(requests)
        for indices in groups.values():
            contexts = [requests[i].args[0] for i in indices]
            for index, text in zip(indices, self._generate(contexts, requests[indices[0]].args[1]), strict=True):
                out[index] = text
                self.cache_hook.add_partial('generate_until', requests[index].args, text)
        return out

    def _generate(self, contexts: list[str], gen_kwargs: dict[str, Any]) -> list[str]:
        kwargs = dict(normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks))
        until = handle_stop_sequences(kwargs.pop('until', None), eos=self.tokenizer.decode([self.eot_token_id]))
        max_gen_toks = int(kwargs.pop('max_gen_toks'))
        if max_gen_toks >= self.max_length:
            raise ValueError(
                f'llmfoundry model: max_gen_toks={max_gen_toks} leaves no room for the prompt in '
                f'max_length={self.max_length}.'
            )
        if not kwargs.get('do_sample'):
            kwargs.pop('temperature', None)  # greedy: transformers warns about a temperature it ignores
        room = self.max_length - max_gen_toks
        prompts = [(self.tok_encode(context) or [self.prefix_token_id])[-room:] for context in contexts]
        texts = generate_answers(
            self.model,
            self.tokenizer,
            prompts,
            batch_size=self.batch_size,
            max_new_tokens=max_gen_toks,
            stop_sequences=until,
            generation_kwargs=kwargs,
            device=self._device,
            precision='fp32',
        )
        return [postprocess_generated_text(text, until, None) for text in texts]


def model_max_length(config: Any) -> int:
    """The longest sequence a transformers config allows (MPT's max_seq_len, else max_position_embeddings)."""
    for name in ('max_seq_len', 'max_position_embeddings', 'n_positions'):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_LENGTH


@torch.no_grad()
def score_requests(
    model: torch.nn.Module, requests: list[Request], batch_size: int, pad_id: int, device: torch.device
) -> list[tuple[float, bool]]:
    """(sum of the continuation's log-probs, whether each continuation token is the argmax) per request.

    Longest first, so a batch pads little; the results come back in the order of `requests`.
    """
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].tokens))
    logits = continuation_logits(model, [requests[i] for i in order], batch_size, pad_id, device, 'fp32')
    results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    for i, step_logits in zip(order, logits, strict=True):
        targets = torch.tensor(requests[i].continuation)
        logprobs = step_logits.log_softmax(-1)
        results[i] = (
            float(logprobs.gather(-1, targets[:, None]).sum()),
            bool((step_logits.argmax(-1) == targets).all()),
        )
    return results
