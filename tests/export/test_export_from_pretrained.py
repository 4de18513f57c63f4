"""MPTForCausalLM.from_pretrained on folders written by others (the interface the model issue promises)."""

from __future__ import annotations

import pytest
import torch
from export_helpers import TOL, VOCAB, input_ids, logits, max_diff
from transformers import LlamaConfig, LlamaForCausalLM, MptConfig, MptForCausalLM

from llmfoundry.export import load_foreign_folder
from llmfoundry.models.mpt import MPTForCausalLM


@pytest.fixture
def native_mpt_dir(tmp_path):
    torch.manual_seed(0)
    model = MptForCausalLM(MptConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=VOCAB, max_seq_len=32)).eval()
    model.save_pretrained(tmp_path / 'native')
    return tmp_path / 'native', model


@pytest.fixture
def llama_dir(tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=VOCAB)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(tmp_path / 'llama')
    return tmp_path / 'llama', model


@pytest.mark.parametrize('folder', ['native_mpt_dir', 'llama_dir'])
def test_load_foreign_folder(request, folder):
    path, theirs = request.getfixturevalue(folder)
    ours = load_foreign_folder(path, torch_dtype=torch.float32)
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(theirs, ids)) <= TOL
    with pytest.raises(ValueError, match='device_map'):
        load_foreign_folder(path, device_map='cpu')


def test_load_foreign_folder_leaves_our_folders_to_from_pretrained(tmp_path, native_mpt_dir):
    ours = load_foreign_folder(native_mpt_dir[0])
    ours.save_pretrained(tmp_path / 'ours')
    assert load_foreign_folder(tmp_path / 'ours') is None


def test_from_pretrained_native_mpt_folder(native_mpt_dir):
    path, theirs = native_mpt_dir
    ids = input_ids()
    assert max_diff(logits(MPTForCausalLM.from_pretrained(path), ids), logits(theirs, ids)) <= TOL


def test_from_pretrained_llama_folder(llama_dir):
    path, theirs = llama_dir
    ids = input_ids()
    assert max_diff(logits(MPTForCausalLM.from_pretrained(path), ids), logits(theirs, ids)) <= TOL
