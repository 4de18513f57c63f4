"""`llmfoundry convert to-hf / from-hf` through the real command dispatcher."""

from __future__ import annotations

import json

import pytest
import torch
from export_helpers import LLAMA_BASE, MPT_BASE, TOL, VOCAB, input_ids, load_hf, logits, max_diff, tiny_model
from safetensors import safe_open
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MptConfig,
    MptForCausalLM,
    PreTrainedTokenizerFast,
)

import llmfoundry.export.to_hf as to_hf_module
from llmfoundry.cli import main as cli
from llmfoundry.export import export_to_hf
from llmfoundry.models.mpt import MPTForCausalLM


def _save_tokenizer(folder) -> None:
    vocab = {f'w{i}': i for i in range(VOCAB - 1)} | {'[UNK]': VOCAB - 1}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token='[UNK]'))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token='[UNK]').save_pretrained(folder)


def test_to_hf_writes_native_folder_with_tokenizer(tmp_path):
    ours = tiny_model(MPT_BASE)
    ours.save_pretrained(tmp_path / 'src')
    _save_tokenizer(tmp_path / 'src')
    assert cli(['convert', 'to-hf', str(tmp_path / 'src'), str(tmp_path / 'out'), '--max-seq-len', '256']) == 0
    theirs = load_hf(tmp_path / 'out', 'MptForCausalLM')
    assert theirs.config.max_seq_len == 256
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(theirs, ids)) <= TOL
    assert (tmp_path / 'out' / 'tokenizer.json').read_bytes() == (tmp_path / 'src' / 'tokenizer.json').read_bytes()
    assert AutoTokenizer.from_pretrained(tmp_path / 'out')('w3 w5')['input_ids'] == [3, 5]


def test_to_hf_bfloat16_and_explicit_tokenizer(tmp_path):
    tiny_model(LLAMA_BASE).save_pretrained(tmp_path / 'src')
    _save_tokenizer(tmp_path / 'tok')
    argv = ['convert', 'to-hf', str(tmp_path / 'src'), str(tmp_path / 'out'), '--dtype', 'bfloat16',
            '--tokenizer', str(tmp_path / 'tok')]
    assert cli(argv) == 0
    assert json.loads((tmp_path / 'out' / 'config.json').read_text())['torch_dtype'] == 'bfloat16'
    with safe_open(tmp_path / 'out' / 'model.safetensors', 'pt') as f:
        assert {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__) == {torch.bfloat16}
    assert (tmp_path / 'out' / 'tokenizer_config.json').is_file()
    assert type(load_hf(tmp_path / 'out', 'LlamaForCausalLM')).__name__ == 'LlamaForCausalLM'


def _native_mpt(folder) -> MptForCausalLM:
    torch.manual_seed(0)
    model = MptForCausalLM(MptConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=VOCAB, max_seq_len=32)).eval()
    model.save_pretrained(folder)
    return model


def _llama(folder) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=VOCAB, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize('make', [_native_mpt, _llama], ids=['native_mpt', 'llama'])
def test_from_hf_writes_our_folder(tmp_path, make):
    theirs = make(tmp_path / 'hf')
    _save_tokenizer(tmp_path / 'hf')
    assert cli(['convert', 'from-hf', str(tmp_path / 'hf'), str(tmp_path / 'ours')]) == 0
    ours = MPTForCausalLM.from_pretrained(tmp_path / 'ours').eval()
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(theirs, ids)) <= TOL
    assert (tmp_path / 'ours' / 'tokenizer.json').is_file()


def test_refuses_non_empty_output(tmp_path, capsys):
    tiny_model(MPT_BASE).save_pretrained(tmp_path / 'src')
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'keep.txt').write_text('mine')
    assert cli(['convert', 'to-hf', str(tmp_path / 'src'), str(tmp_path / 'out')]) == 1
    assert 'not an empty folder' in capsys.readouterr().err
    assert [p.name for p in (tmp_path / 'out').iterdir()] == ['keep.txt']


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError('disk full')

    monkeypatch.setattr(to_hf_module, 'write_safetensors', fail)
    (tmp_path / 'parent').mkdir()
    with pytest.raises(RuntimeError, match='disk full'):
        export_to_hf(tiny_model(MPT_BASE), tmp_path / 'parent' / 'out')
    assert list((tmp_path / 'parent').iterdir()) == []


def test_usage_errors_return_status(capsys):
    assert cli(['convert', '--help']) == 0
    assert 'to-hf' in capsys.readouterr().out
    assert cli(['convert', 'to-hf', 'only-one-arg']) == 2
