"""llm-foundry's finetuning MDS layouts, read with mosaicml-streaming and masked on the fly.

A sample is one of: `turns` (json: [{input_ids, labels}, ...], what convert_finetuning_dataset writes with a
tokenizer); `input_ids` + `labels` (one turn, integer ndarrays or raw bytes of token_encoding_type); or raw
text, `prompt` + `response` (str) or `messages` (json), tokenised here. Every sample is then masked and truncated
with this loader's settings; one left with no loss-bearing token is an error (it cannot be dropped from a
streaming epoch), which names the sample and suggests matching the settings used at conversion.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from streaming import StreamingDataset
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.finetuning.formats import FinetuningDataError
from llmfoundry.data.finetuning.masking import MaskPolicy, Row, masked_row
from llmfoundry.data.finetuning.tokenize import Turn, tokenize_example
from llmfoundry.data.text_loader import TOKEN_ENCODINGS


def sample_turns(sample: dict[str, Any], tokenizer: PreTrainedTokenizerBase, token_encoding_type: str) -> list[Turn]:
    """The turns of one MDS sample in any of llm-foundry's finetuning layouts."""
    if 'turns' in sample:
        return [{'input_ids': list(t['input_ids']), 'labels': list(t['labels'])} for t in sample['turns']]
    if 'input_ids' in sample:
        return [{key: _ints(sample[key], token_encoding_type) for key in ('input_ids', 'labels')}]
    return tokenize_example({k: v for k, v in sample.items() if k in ('prompt', 'response', 'messages')}, tokenizer)


def _ints(value: Any, token_encoding_type: str) -> list[int]:
    if isinstance(value, bytes):  # legacy layout: raw bytes of a fixed-width integer array
        return np.frombuffer(value, dtype=token_encoding_type).tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise ValueError(f'input_ids/labels must be bytes or an ndarray, got {type(value).__name__}')


class StreamingFinetuningDataset(StreamingDataset):
    """Samples are masked, truncated rows (input_ids, labels).

    `examples_per_batch_row`: examples consumed per emitted batch row (the packing ratio actually used), so that
    the resumption state counts examples, not packed rows."""

    def __init__(
        self, *, tokenizer: PreTrainedTokenizerBase, policy: MaskPolicy, max_seq_len: int,
        token_encoding_type: str = 'int64', examples_per_batch_row: float = 1.0, **streaming_kwargs: Any,
    ) -> None:  # fmt: skip
        if token_encoding_type not in TOKEN_ENCODINGS:
            raise ValueError(f"token_encoding_type '{token_encoding_type}' is not one of {TOKEN_ENCODINGS}")
        super().__init__(**streaming_kwargs)
        self.tokenizer = tokenizer
        self.policy = policy
        self.max_seq_len = max_seq_len
        self.token_encoding_type = token_encoding_type
        self.examples_per_batch_row = examples_per_batch_row

    def turns(self, idx: int) -> list[Turn]:
        try:
            return sample_turns(super().__getitem__(idx), self.tokenizer, self.token_encoding_type)
        except (ValueError, KeyError, TypeError) as err:
            raise FinetuningDataError(f'MDS sample {idx}: {err}') from err

    def __getitem__(self, idx: int) -> Row:
        row = masked_row(self.turns(idx), self.policy, self.tokenizer.eos_token_id, self.max_seq_len)
        if row is None:
            raise FinetuningDataError(
                f'MDS sample {idx} has no loss-bearing token within max_seq_len={self.max_seq_len} under '
                f'target_prompts={self.policy.target_prompts!r}, target_responses={self.policy.target_responses!r}; '
                'convert the dataset with the same --max_seq_len/--target_prompts/--target_responses (the converter '
                'drops such examples) or raise max_seq_len')
        return row

    def state_dict(self, num_samples: int, from_beginning: bool) -> dict[str, Any]:
        return super().state_dict(int(num_samples * self.examples_per_batch_row), from_beginning)
