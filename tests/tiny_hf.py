"""Tiny transformers models and a word-level tokenizer for the tests that export or checkpoint any causal LM.

    from tiny_hf import TINY_CONFIGS, VOCAB, fixed_logits, word_tokenizer
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, PretrainedConfig, PreTrainedTokenizerFast

VOCAB = 64
TINY_CONFIGS: dict[str, PretrainedConfig] = {
    'gpt2': GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=4, n_positions=32),
    'llama': LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2),
    'neox': GPTNeoXConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=32),
}


def word_tokenizer(vocab: int = VOCAB) -> PreTrainedTokenizerFast:
    """Words w0 .. w{vocab-2} and [UNK]: a real fast tokenizer that save_pretrained can write."""
    inner = Tokenizer(models.WordLevel({f'w{i}': i for i in range(vocab - 1)} | {'[UNK]': vocab - 1},
                                       unk_token='[UNK]'))
    inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=inner, unk_token='[UNK]')


@torch.no_grad()
def fixed_logits(model: torch.nn.Module, vocab: int = VOCAB) -> torch.Tensor:
    """fp32 logits of `model` (in eval mode) on a fixed random batch of 2 x 10 tokens."""
    ids = torch.randint(0, vocab, (2, 10), generator=torch.Generator().manual_seed(1))
    return model.eval()(input_ids=ids).logits.float()
