"""Tiny word-level tokenizers whose ids can be checked by hand: one id per whitespace-separated word."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIALS = ['<|endoftext|>', '<|padding|>', '<s>', '<|im_start|>', '<|im_end|>']
WORDS = ['user', 'assistant', 'system', 'tool', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'hi', 'yo', 'bye', 'q', 'x']
VOCAB = {token: index for index, token in enumerate(SPECIALS + WORDS)}  # <|endoftext|> 0 ... a 9, b 10, ...


def word_tokenizer(bos: bool = False) -> PreTrainedTokenizerFast:
    """EOS 0, pad 1; with `bos`, <s> (2) starts every encoding, as Llama's tokenizer does."""
    model = Tokenizer(models.WordLevel(VOCAB, unk_token='x'))
    model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:
        model.post_processor = processors.TemplateProcessing(single='<s> $A', special_tokens=[('<s>', 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, eos_token='<|endoftext|>', pad_token='<|padding|>',
                                        bos_token='<s>' if bos else None, unk_token='x')
    tokenizer.add_special_tokens({'additional_special_tokens': ['<|im_start|>', '<|im_end|>']})
    return tokenizer


@pytest.fixture
def tok() -> PreTrainedTokenizerFast:
    return word_tokenizer()


@pytest.fixture
def bos_tok() -> PreTrainedTokenizerFast:
    return word_tokenizer(bos=True)
