"""hf_checkpointer: HF folders at interval crossings and at fit_end, loadable by transformers, never half-written;
locally, on fsspec's in-memory filesystem and on a real S3 server."""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path

import pytest
import torch
from callback_state import finish_batch, make_state
from tiny_hf import VOCAB, fixed_logits, word_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from llmfoundry import storage
from llmfoundry.callbacks.hf_checkpointer import HuggingFaceCheckpointer
from llmfoundry.config.validation import ConfigError
from llmfoundry.export import load_model
from llmfoundry.interfaces import MetricLogger
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.registry import callbacks

NO_LOG = MetricLogger([], is_main=True)


pytestmark = pytest.mark.one_thread  # tiny models (tests/conftest.py)


def _model() -> MPTForCausalLM:
    torch.manual_seed(0)
    config = MPTConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=VOCAB, max_seq_len=32, no_bias=True,
                       attn_config={'alibi': True, 'attn_impl': 'torch'})
    return MPTForCausalLM(config)


def _run(tmp_path: Path, callback: HuggingFaceCheckpointer, batches: int, model=None):
    state = make_state(tmp_path, model or _model(), max_duration=f'{batches}ba')
    state.tokenizer = word_tokenizer()
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
    assert (fixed_logits(hf) - fixed_logits(state.model)).abs().max().item() <= 1e-5
    assert AutoTokenizer.from_pretrained(root / 'ba5')('w3 w5')['input_ids'] == [3, 5]


def test_default_float32_overwrite_and_refusing_to_overwrite(tmp_path: Path) -> None:
    _run(tmp_path, HuggingFaceCheckpointer(str(tmp_path), '1ba', precision='bfloat16'), batches=1)
    folder = tmp_path / 'huggingface' / 'ba1'
    assert json.loads((folder / 'config.json').read_text())['torch_dtype'] == 'bfloat16'
    with pytest.raises(RuntimeError, match='ba1 exists; set overwrite: true'):
        _run(tmp_path, HuggingFaceCheckpointer(str(tmp_path), '1ba', overwrite=False), batches=1)

    other = _model()
    with torch.no_grad():
        other.transformer.wte.weight.mul_(2)
    state = _run(tmp_path, HuggingFaceCheckpointer(str(tmp_path), '1ba'), batches=1, model=other)  # llm-foundry's
    assert sorted(p.name for p in (tmp_path / 'huggingface').iterdir()) == ['ba1']
    assert json.loads((folder / 'config.json').read_text())['torch_dtype'] == 'float32'
    hf = AutoModelForCausalLM.from_pretrained(folder)
    assert (fixed_logits(hf) - fixed_logits(state.model)).abs().max().item() <= 1e-5


def _check_remote_folder(url: str, local: Path, model: torch.nn.Module) -> None:
    """The folder at `url`, downloaded, loads with transformers and with our load_model, logits unchanged."""
    storage.download_folder(url, local)
    for loaded in (AutoModelForCausalLM.from_pretrained(local), load_model(local)):
        assert (fixed_logits(loaded) - fixed_logits(model)).abs().max().item() <= 1e-5
    assert AutoTokenizer.from_pretrained(local)('w3 w5')['input_ids'] == [3, 5]


def test_memory_filesystem_save_folder_and_replace(tmp_path: Path) -> None:
    root = f'memory://hf-{uuid.uuid4().hex[:8]}/{{run_name}}'
    state = _run(tmp_path, HuggingFaceCheckpointer(root, '2ba'), batches=2)
    url = root.replace('{run_name}', 'test-run') + '/huggingface/ba2'
    assert storage.list_folders(url.rsplit('/', 1)[0]) == ['ba2']
    assert not (tmp_path / 'memory:').exists()  # never a local folder named after the URL
    _check_remote_folder(url, tmp_path / 'first', state.model)

    other = _model()
    with torch.no_grad():
        other.transformer.wte.weight.mul_(2)
    state = _run(tmp_path, HuggingFaceCheckpointer(root, '2ba'), batches=2, model=other)  # overwrite: true
    _check_remote_folder(url, tmp_path / 'second', state.model)
    with pytest.raises(RuntimeError, match='ba2 exists; set overwrite: true'):
        _run(tmp_path, HuggingFaceCheckpointer(root, '2ba', overwrite=False), batches=2)


def test_a_transformers_model_goes_to_object_storage_too(tmp_path: Path) -> None:
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32))
    root = f'memory://hf-{uuid.uuid4().hex[:8]}'
    state = _run(tmp_path, HuggingFaceCheckpointer(root, '1ba'), batches=1, model=llama)
    storage.download_folder(f'{root}/huggingface/ba1', tmp_path / 'llama')
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / 'llama')
    assert type(loaded).__name__ == 'LlamaForCausalLM'
    assert (fixed_logits(loaded) - fixed_logits(state.model)).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_s3_save_folder_loads_after_download(tmp_path: Path, s3_server, monkeypatch: pytest.MonkeyPatch) -> None:
    from s3_server import TEST_BUCKET

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    root = f's3://{TEST_BUCKET}/hf/{uuid.uuid4().hex[:12]}'
    state = _run(tmp_path, HuggingFaceCheckpointer(root, '1ba', huggingface_folder_name='{run_name}-ba{batch}'),
                 batches=1)
    url = f'{root}/huggingface/test-run-ba1'
    assert 'config.json' in storage.file_sizes(url)
    _check_remote_folder(url, tmp_path / 'download', state.model)


def test_llm_foundry_registration_keys_are_refused_or_warned() -> None:
    with pytest.raises(ConfigError, match="mlflow_registered_model_name='m': registering models in MLflow is not"):
        HuggingFaceCheckpointer('/tmp/x', '1ba', mlflow_registered_model_name='m')
    with pytest.warns(UserWarning, match='final_register_only, mlflow_logging_config only apply to MLflow'):
        HuggingFaceCheckpointer('/tmp/x', '1ba', mlflow_logging_config={'task': 'chat'}, final_register_only=True)
    with pytest.warns(UserWarning, match='flatten_imports has no effect'):
        HuggingFaceCheckpointer('/tmp/x', '1ba', flatten_imports=['mylib'])
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # llm-foundry's defaults spelled out: no warning
        HuggingFaceCheckpointer('/tmp/x', '1ba', mlflow_logging_config=None, flatten_imports=['llmfoundry'],
                                register_wait_seconds=7200)
    with pytest.raises(ConfigError, match=r"huggingface_folder_name='ba\{step\}': KeyError\('step'\)"):
        HuggingFaceCheckpointer('/tmp/x', '1ba', huggingface_folder_name='ba{step}')


def test_rejects_unknown_precision() -> None:
    with pytest.raises(ConfigError, match="precision='fp16' is invalid; allowed: float32, bfloat16, float16"):
        HuggingFaceCheckpointer('/tmp/x', '1ba', precision='fp16')
