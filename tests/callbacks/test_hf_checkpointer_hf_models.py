"""hf_checkpointer writes a folder for any transformers model (here GPT-2 with tied embeddings and Llama) that
transformers loads with identical logits, with the run's tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from callback_state import finish_batch, make_state
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig, PreTrainedTokenizerFast

from llmfoundry.callbacks.hf_checkpointer import HuggingFaceCheckpointer
from llmfoundry.interfaces import MetricLogger

VOCAB = 64
CONFIGS = {
    'gpt2': GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=4, n_positions=32),
    'llama': LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2),
}


def _tokenizer() -> PreTrainedTokenizerFast:
    inner = Tokenizer(models.WordLevel({f'w{i}': i for i in range(VOCAB - 1)} | {'[UNK]': VOCAB - 1},
                                       unk_token='[UNK]'))
    inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=inner, unk_token='[UNK]')


@torch.no_grad()
def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(1))
    return model.eval()(input_ids=ids).logits


@pytest.mark.parametrize('name', list(CONFIGS))
def test_fit_end_writes_a_transformers_folder_with_identical_logits(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[name])
    state = make_state(tmp_path, model, max_duration='1ba')
    state.tokenizer = _tokenizer()
    callback = HuggingFaceCheckpointer(str(tmp_path / 'hf'), '1ba', precision='float32')
    callback.fit_start(state, MetricLogger([], is_main=True))
    finish_batch(state)
    callback.fit_end(state, MetricLogger([], is_main=True))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / 'hf' / 'huggingface' / 'ba1')
    assert type(loaded) is type(model)
    assert torch.equal(_logits(loaded), _logits(model))
    assert AutoTokenizer.from_pretrained(tmp_path / 'hf' / 'huggingface' / 'ba1')('w3 w5')['input_ids'] == [3, 5]
