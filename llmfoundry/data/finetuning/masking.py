"""Turns -> one token row with labels aligned to it (label i is token i, or -100 where no loss is taken).

target_responses: 'last' (only the final response is a target) or 'all'. target_prompts: 'none', 'all' or
'length>=N' (a prompt of at least N tokens is a target, judged per turn). The final response gets EOS appended
unless it already ends with it. Rows are cut to max_seq_len; a row left with no target token is unusable.
The model (or our trainer) shifts labels itself, as with llm-foundry's models.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmfoundry.config.validation import ConfigError
from llmfoundry.data.finetuning.tokenize import Turn
from llmfoundry.data.labels import IGNORE_INDEX

LENGTH_PREFIX = 'length>='
Row = tuple[list[int], list[int]]  # (input_ids, labels), truncated to max_seq_len


@dataclass(frozen=True)
class MaskPolicy:
    """Which prompts and responses are training targets."""

    target_prompts: str = 'none'
    target_responses: str = 'last'

    @classmethod
    def from_config(cls, target_prompts: str | None, target_responses: str | None, key: str) -> MaskPolicy:
        """Validated (case-insensitive, like llm-foundry); `key` names the dataset section in errors."""
        prompts = str(target_prompts or 'none').lower()
        responses = str(target_responses or 'last').lower()
        if responses not in ('last', 'all'):
            raise ConfigError(f"{key}.target_responses={target_responses!r}: use 'last' or 'all'")
        if prompts.startswith(LENGTH_PREFIX):
            cutoff = prompts[len(LENGTH_PREFIX):]
            if not cutoff.isdigit() or int(cutoff) <= 0:
                raise ConfigError(f"{key}.target_prompts={target_prompts!r}: 'length>=N' needs a positive integer N")
        elif prompts not in ('none', 'all'):
            raise ConfigError(f"{key}.target_prompts={target_prompts!r}: use 'none', 'all' or 'length>=N'")
        return cls(prompts, responses)

    def prompt_is_target(self, length: int) -> bool:
        if self.target_prompts.startswith(LENGTH_PREFIX):
            return length >= int(self.target_prompts[len(LENGTH_PREFIX):])
        return self.target_prompts == 'all'

    def response_is_target(self, is_last: bool) -> bool:
        return self.target_responses == 'all' or is_last


def stitch(turns: list[Turn], policy: MaskPolicy, eos_token_id: int | None) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of the whole example, before truncation."""
    input_ids: list[int] = []
    labels: list[int] = []
    for index, turn in enumerate(turns):
        is_last = index == len(turns) - 1
        prompt, response = list(turn['input_ids']), list(turn['labels'])
        if is_last and eos_token_id is not None and response[-1:] != [eos_token_id]:
            response.append(eos_token_id)
        input_ids += prompt + response
        labels += prompt if policy.prompt_is_target(len(prompt)) else [IGNORE_INDEX] * len(prompt)
        labels += response if policy.response_is_target(is_last) else [IGNORE_INDEX] * len(response)
    return input_ids, labels


def masked_row(turns: list[Turn], policy: MaskPolicy, eos_token_id: int | None, max_seq_len: int) -> Row | None:
    """The truncated (input_ids, labels), or None when the example cannot train: an empty prompt or response in
    some turn (as llm-foundry rejects), or no target token left within max_seq_len."""
    if not turns or any(not turn['input_ids'] or not turn['labels'] for turn in turns):
        return None
    input_ids, labels = stitch(turns, policy, eos_token_id)
    input_ids, labels = input_ids[:max_seq_len], labels[:max_seq_len]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return input_ids, labels
