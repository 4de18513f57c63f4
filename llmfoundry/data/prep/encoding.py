"""Documents -> token ids with optional BOS/EOS text around each, via the fast tokenizer's batch API."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from llmfoundry.data.prep.packing import TOKEN_DTYPE


@dataclass(frozen=True)
class TokenizeSpec:
    """Everything a worker process needs to rebuild the same document encoder (picklable)."""

    tokenizer: str
    tokenizer_kwargs: dict
    bos_text: str = ''
    eos_text: str = ''

    def load(self) -> PreTrainedTokenizerBase:
        from llmfoundry.data.tokenizers import build_tokenizer

        tokenizer = build_tokenizer(self.tokenizer, self.tokenizer_kwargs)
        # Documents are packed, never truncated; silence the "sequence longer than max" warning.
        tokenizer.model_max_length = int(1e30)
        return tokenizer


class DocumentEncoder:
    """bos_text tokens + the document's tokens (with the tokenizer's own special tokens, as
    llm-foundry does) + eos_text tokens, for a batch of documents at once."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, bos_text: str = '', eos_text: str = '') -> None:
        self.tokenizer = tokenizer
        self.bos = self._text_ids(bos_text)
        self.eos = self._text_ids(eos_text)

    @classmethod
    def from_spec(cls, spec: TokenizeSpec) -> DocumentEncoder:
        return cls(spec.load(), spec.bos_text, spec.eos_text)

    def _text_ids(self, text: str) -> np.ndarray:
        ids = self.tokenizer(text, add_special_tokens=False)['input_ids'] if text else []
        return np.asarray(ids, dtype=TOKEN_DTYPE)

    def encode(self, docs: list[str]) -> list[np.ndarray]:
        if self.tokenizer.is_fast:
            # The Rust batch encoder directly: the same ids as tokenizer(docs) without the Python-side
            # overhead; encode_batch_fast (tokenizers>=0.21) also skips character offsets we never use.
            backend = self.tokenizer.backend_tokenizer
            encode = getattr(backend, 'encode_batch_fast', backend.encode_batch)
            ids = [enc.ids for enc in encode(docs, add_special_tokens=True)]
        else:
            ids = self.tokenizer(docs, add_special_tokens=True, verbose=False)['input_ids']
        return [np.concatenate([self.bos, np.asarray(x, dtype=TOKEN_DTYPE), self.eos]) for x in ids]
