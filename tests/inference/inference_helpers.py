"""A tiny MPT, a word-level tokenizer with ChatML tokens, and the folders the inference tests load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from llmfoundry.config.time import Timestamp
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.train.checkpoint import CheckpointParts, SaveSettings, save

WORDS = 120
SPECIAL = ['<|endoftext|>', '<|im_start|>', '<|im_end|>']
VOCAB = WORDS + 3 + len(SPECIAL) + 1  # words, roles, special tokens, [UNK]
MPT: dict[str, Any] = {
    'd_model': 48, 'n_heads': 6, 'n_layers': 2, 'vocab_size': VOCAB, 'max_seq_len': 128, 'no_bias': True,
    'attn_config': {'alibi': True, 'attn_impl': 'torch'},
}
LLAMA_SHAPED: dict[str, Any] = {
    **MPT, 'norm_type': 'rmsnorm', 'tie_word_embeddings': False,
    'attn_config': {'rope': True, 'rope_impl': 'hf', 'attn_impl': 'torch', 'attn_type': 'grouped_query_attention',
                    'kv_n_heads': 2},
}


def word_tokenizer() -> PreTrainedTokenizerFast:
    """w0 .. w119, the chat roles, ChatML's tokens and EOS: every rendered chat encodes without [UNK]."""
    names = [f'w{i}' for i in range(WORDS)] + ['system', 'user', 'assistant'] + SPECIAL + ['[UNK]']
    inner = Tokenizer(models.WordLevel({name: i for i, name in enumerate(names)}, unk_token='[UNK]'))
    inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=inner, unk_token='[UNK]', eos_token='<|endoftext|>',
                                   additional_special_tokens=SPECIAL[1:])


@torch.no_grad()
def tiny_mpt(config: dict[str, Any] = MPT, seed: int = 0) -> MPTForCausalLM:
    """A random model with matrices of std 2/sqrt(fan_in): its greedy text varies (the default init's small
    weights give near-uniform logits and repeat one token) and its choices are far from ties."""
    torch.manual_seed(seed)
    model = MPTForCausalLM(MPTConfig(**config)).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    for param in model.parameters():
        if param.ndim == 2:
            param.normal_(0, 2 / param.shape[1] ** 0.5, generator=generator)
    return model


def save_run(model: MPTForCausalLM, run: Path, tokenizer_dir: Path) -> str:
    """A training run folder holding one checkpoint of `model` whose config names `tokenizer_dir`."""
    config = {'max_seq_len': 128, 'model': {'name': 'mpt_causal_lm', 'init_device': 'meta', **model_section(model)},
              'tokenizer': {'name': str(tokenizer_dir)}}
    parts = CheckpointParts(model, torch.optim.AdamW(model.parameters()), Timestamp(batch=2), None,
                            OmegaConf.to_yaml(OmegaConf.create(config)))
    return save(SaveSettings(str(run)), parts, rank=0, world_size=1)


def model_section(model: MPTForCausalLM) -> dict[str, Any]:
    keys = ('d_model', 'n_heads', 'n_layers', 'vocab_size', 'max_seq_len', 'no_bias', 'tie_word_embeddings',
            'attn_config', 'norm_type')
    return {key: getattr(model.config, key) for key in keys}


@torch.no_grad()
def greedy_text(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, text: str, new_tokens: int,
                special_tokens: bool = True) -> str:
    """Plain `model.generate` on one unpadded prompt, decoded up to its first EOS or <|im_end|>."""
    ids = torch.tensor([tokenizer(text, add_special_tokens=special_tokens)['input_ids']])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                         pad_token_id=tokenizer.eos_token_id)[0, ids.shape[1]:].tolist()
    stops = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids('<|im_end|>')}
    end = next((i + 1 for i, token in enumerate(out) if token in stops), len(out))
    return tokenizer.decode(out[:end], skip_special_tokens=True)
