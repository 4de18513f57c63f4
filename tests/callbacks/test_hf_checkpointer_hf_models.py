"""hf_checkpointer writes a folder for any transformers model (here GPT-2 with tied embeddings and Llama) that
transformers loads with identical logits, with the run's tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from callback_state import finish_batch, make_state
from tiny_hf import TINY_CONFIGS, fixed_logits, word_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmfoundry.callbacks.hf_checkpointer import HuggingFaceCheckpointer
from llmfoundry.interfaces import MetricLogger


@pytest.mark.parametrize('name', ['gpt2', 'llama'])
def test_fit_end_writes_a_transformers_folder_with_identical_logits(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(TINY_CONFIGS[name])
    state = make_state(tmp_path, model, max_duration='1ba')
    state.tokenizer = word_tokenizer()
    callback = HuggingFaceCheckpointer(str(tmp_path / 'hf'), '1ba', precision='float32')
    callback.fit_start(state, MetricLogger([], is_main=True))
    finish_batch(state)
    callback.fit_end(state, MetricLogger([], is_main=True))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / 'hf' / 'huggingface' / 'ba1')
    assert type(loaded) is type(model)
    assert torch.equal(fixed_logits(loaded), fixed_logits(model))
    assert AutoTokenizer.from_pretrained(tmp_path / 'hf' / 'huggingface' / 'ba1')('w3 w5')['input_ids'] == [3, 5]
