"""A tiny MPT, a character-level tokenizer (delimiters stay visible as tokens) and direct, unbatched model
calls that the eval tests compare against."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from llmfoundry.eval.task_config import IclTaskConfig
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

CHARS = 'abcdefghijklmnopqrstuvwxyz \n'
EOS = '<eos>'


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of CHARS, plus <eos> (also the pad token)."""
    vocab = {ch: i for i, ch in enumerate(CHARS)} | {EOS: len(CHARS)}
    inner = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    inner.pre_tokenizer = pre_tokenizers.Split(Regex(r'[\s\S]'), behavior='isolated')
    inner.decoder = decoders.Fuse()  # decode joins the characters back without spaces
    return PreTrainedTokenizerFast(tokenizer_object=inner, eos_token=EOS, pad_token=EOS)


def tiny_mpt(vocab: int, seed: int = 0) -> MPTForCausalLM:
    torch.manual_seed(seed)
    config = MPTConfig(d_model=32, n_heads=2, n_layers=2, vocab_size=vocab, max_seq_len=256,
                       attn_config={'attn_impl': 'torch'})
    return MPTForCausalLM(config).eval()


def ids(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)['input_ids']


@torch.no_grad()
def log_probs(model: MPTForCausalLM, context: list[int], continuation: list[int]) -> torch.Tensor:
    """log p(continuation token | everything before it), one unpadded forward pass."""
    logits = model(input_ids=torch.tensor([context + continuation])).logits[0].float()
    steps = logits[len(context) - 1:len(context) - 1 + len(continuation)].log_softmax(-1)
    return steps[torch.arange(len(continuation)), torch.tensor(continuation)]


@torch.no_grad()
def greedy(model: MPTForCausalLM, prompt: list[int], steps: int, stop: int | None = None) -> list[int]:
    """Argmax decoding without a cache, `steps` tokens or up to and excluding `stop`."""
    out = list(prompt)
    for _ in range(steps):
        token = int(model(input_ids=torch.tensor([out])).logits[0, -1].argmax())
        if token == stop:
            break
        out.append(token)
    return out[len(prompt):]


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text(''.join(json.dumps(r) + '\n' for r in records), encoding='utf-8')
    return str(path)


def task(uri: str, task_type: str, shots: list[int], **keys) -> IclTaskConfig:
    return IclTaskConfig(label=keys.pop('label', 'task'), dataset_uri=uri, icl_task_type=task_type,
                         num_fewshot=shots, max_seq_len=keys.pop('max_seq_len', 200),
                         batch_size=keys.pop('batch_size', 4), **keys)
