"""hf_checkpointer: HF folders at interval crossings and at fit_end, loadable by transformers, never half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from callback_state import finish_batch, make_state
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from llmfoundry.callbacks.hf_checkpointer import HuggingFaceCheckpointer
from llmfoundry.config.validation import ConfigError
from llmfoundry.interfaces import MetricLogger
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.registry import callbacks

VOCAB = 64
NO_LOG = MetricLogger([], is_main=True)


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _model() -> MPTForCausalLM:
    torch.manual_seed(0)
    config = MPTConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=VOCAB, max_seq_len=32, no_bias=True,
                       attn_config={'alibi': True, 'attn_impl': 'torch'})
    return MPTForCausalLM(config)


def _tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.WordLevel({f'w{i}': i for i in range(VOCAB - 1)} | {'[UNK]': VOCAB - 1},
                                           unk_token='[UNK]'))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token='[UNK]')


@torch.no_grad()
def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(1))
    return model.eval()(input_ids=ids).logits.float()


def _run(tmp_path: Path, callback: HuggingFaceCheckpointer, batches: int, model=None):
    state = make_state(tmp_path, model or _model(), max_duration=f'{batches}ba')
    state.tokenizer = _tokenizer()
    callback.fit_start(state, NO_LOG)
    for _ in range(batches):
        finish_batch(state)
        callback.batch_end(state, NO_LOG)
    callback.fit_end(state, NO_LOG)
    return state


def test_saves_at_crossings_and_fit_end_in_float32_with_matching_logits(tmp_path: Path) -> None:
    callback = callbacks.build('hf_checkpointer', {'save_folder': str(tmp_path / '{run_name}'), 'save_interval': '2ba',
                                                   'precision': 'float32'}, path='callbacks.hf_checkpointer')
    state = _run(tmp_path, callback, batches=5)
    root = tmp_path / 'test-run' / 'huggingface'
    assert sorted(p.name for p in root.iterdir()) == ['ba2', 'ba4', 'ba5']  # no temp folders left behind
    hf = AutoModelForCausalLM.from_pretrained(root / 'ba5')
    assert type(hf).__name__ == 'MptForCausalLM'
    assert (_logits(hf) - _logits(state.model)).abs().max().item() <= 1e-5
    assert AutoTokenizer.from_pretrained(root / 'ba5')('w3 w5')['input_ids'] == [3, 5]


def test_default_bfloat16_and_overwrite(tmp_path: Path) -> None:
    _run(tmp_path, HuggingFaceCheckpointer(str(tmp_path), '1ba'), batches=1)
    folder = tmp_path / 'huggingface' / 'ba1'
    assert json.loads((folder / 'config.json').read_text())['torch_dtype'] == 'bfloat16'
    with pytest.raises(RuntimeError, match='ba1 exists; set overwrite: true'):
        _run(tmp_path, HuggingFaceCheckpointer(str(tmp_path), '1ba'), batches=1)

    other = _model()
    with torch.no_grad():
        other.transformer.wte.weight.mul_(2)
    state = _run(tmp_path, HuggingFaceCheckpointer(str(tmp_path), '1ba', precision='float32', overwrite=True),
                 batches=1, model=other)
    assert sorted(p.name for p in (tmp_path / 'huggingface').iterdir()) == ['ba1']
    hf = AutoModelForCausalLM.from_pretrained(folder)
    assert (_logits(hf) - _logits(state.model)).abs().max().item() <= 1e-5


def test_rejects_unknown_precision() -> None:
    with pytest.raises(ConfigError, match="precision='fp16' is invalid; allowed: float32, bfloat16"):
        HuggingFaceCheckpointer('/tmp/x', '1ba', precision='fp16')
