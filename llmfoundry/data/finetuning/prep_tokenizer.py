"""convert_finetuning_dataset's tokenizer: transformers' token ids, with transformers imported only for chat.

Token ids come from llmfoundry.data.fast_tokenizer (`tokenizers` alone for a folder with tokenizer.json, the
same ids as transformers' tokenizer). Chat templates are jinja rendered by transformers' `apply_chat_template`,
so transformers' tokenizer is built the first time a chat example needs it: prompt/response data never loads it.
"""

from __future__ import annotations

import functools
from typing import Any

from llmfoundry.data.fast_tokenizer import TransformersTokenizer, load_tokenizer


class PrepTokenizer:
    """The part of a transformers tokenizer that llmfoundry.data.finetuning.tokenize uses (`TurnTokenizer`)."""

    def __init__(self, name: str, kwargs: dict[str, Any]) -> None:
        self.name = name
        self.kwargs = kwargs
        self.encoder = load_tokenizer(name, kwargs)
        self.bos_token_id = self.encoder.bos_token_id
        self.eos_token_id = self.encoder.eos_token_id

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {'input_ids': self.encoder.encode_batch([text], add_special_tokens)[0]}

    @functools.cached_property
    def transformers_tokenizer(self) -> Any:
        if isinstance(self.encoder, TransformersTokenizer):
            return self.encoder.tokenizer
        from llmfoundry.data.tokenizers import build_tokenizer  # imports transformers

        return build_tokenizer(self.name, self.kwargs)

    @property
    def chat_template(self) -> Any:
        return self.transformers_tokenizer.chat_template

    def apply_chat_template(self, conversation: list[dict[str, Any]], **kwargs: Any) -> Any:
        return self.transformers_tokenizer.apply_chat_template(conversation, **kwargs)
