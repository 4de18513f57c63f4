"""Documents -> token ids with optional BOS/EOS text around each, via the tokenizer's batch encoder.

The tokenizer comes from `llmfoundry.data.fast_tokenizer`: `tokenizers` alone when that gives transformers'
ids (a folder with tokenizer.json), transformers otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmfoundry.data.fast_tokenizer import ConversionTokenizer, load_tokenizer
from llmfoundry.data.prep.packing import TOKEN_DTYPE


@dataclass(frozen=True)
class TokenizeSpec:
    """Everything a worker process needs to rebuild the same document encoder (picklable)."""

    tokenizer: str
    tokenizer_kwargs: dict
    bos_text: str = ''
    eos_text: str = ''

    def load(self) -> ConversionTokenizer:
        return load_tokenizer(self.tokenizer, self.tokenizer_kwargs)


class DocumentEncoder:
    """bos_text tokens + the document's tokens (with the tokenizer's own special tokens, as
    llm-foundry does) + eos_text tokens, for a batch of documents at once."""

    def __init__(self, tokenizer: ConversionTokenizer, bos_text: str = '', eos_text: str = '') -> None:
        self.tokenizer = tokenizer
        self.bos = self._text_ids(bos_text)
        self.eos = self._text_ids(eos_text)

    @classmethod
    def from_spec(cls, spec: TokenizeSpec) -> DocumentEncoder:
        return cls(spec.load(), spec.bos_text, spec.eos_text)

    def _text_ids(self, text: str) -> np.ndarray:
        ids = self.tokenizer.encode_batch([text], add_special_tokens=False)[0] if text else []
        return np.asarray(ids, dtype=TOKEN_DTYPE)

    def encode(self, docs: list[str]) -> list[np.ndarray]:
        ids = self.tokenizer.encode_batch(docs, add_special_tokens=True)
        return [np.concatenate([self.bos, np.asarray(x, dtype=TOKEN_DTYPE), self.eos]) for x in ids]
