"""Loading folders written by others: `llmfoundry.export.load_model` converts them, while
MPTForCausalLM.from_pretrained refuses them with a message naming load_model (it would misread their config)."""

from __future__ import annotations

import pytest
import torch
from export_helpers import TOL, VOCAB, input_ids, logits, max_diff
from transformers import GPT2Config, LlamaConfig, LlamaForCausalLM, MptConfig, MptForCausalLM

from llmfoundry.export import load_model
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM


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
def test_load_model_converts_foreign_folders(request, folder):
    path, theirs = request.getfixturevalue(folder)
    ours = load_model(path, torch_dtype=torch.float32)
    assert isinstance(ours, MPTForCausalLM) and not ours.training
    ids = input_ids()
    assert max_diff(logits(ours, ids), logits(theirs, ids)) <= TOL
    with pytest.raises(ValueError, match='device_map'):
        load_model(path, device_map='cpu')


def test_load_model_reads_our_folders_through_from_pretrained(tmp_path, native_mpt_dir):
    converted = load_model(native_mpt_dir[0])
    converted.save_pretrained(tmp_path / 'ours')
    model, info = load_model(tmp_path / 'ours', output_loading_info=True)  # any from_pretrained option works here
    assert isinstance(model, MPTForCausalLM) and not info['missing_keys'] and not info['unexpected_keys']
    ids = input_ids()
    assert max_diff(logits(model, ids), logits(converted, ids)) == 0


@pytest.mark.parametrize(('folder', 'named'), [
    ('native_mpt_dir', "transformers' native MPT \\(MptForCausalLM\\)"),
    ('llama_dir', 'a Llama model'),
])
def test_from_pretrained_refuses_foreign_folders(request, folder, named):
    path, _ = request.getfixturevalue(folder)
    message = f"^{path} holds {named}.*not llm-foundry's MPT.*llmfoundry.export.load_model.*llmfoundry convert from-hf"
    with pytest.raises(ValueError, match=message):
        MPTForCausalLM.from_pretrained(path)
    with pytest.raises(ValueError, match=message):
        MPTConfig.from_pretrained(path)


def test_from_pretrained_refuses_other_model_types(tmp_path):
    GPT2Config(n_layer=1).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds a model of model_type 'gpt2'.*llmfoundry.export.load_model"):
        MPTForCausalLM.from_pretrained(tmp_path)
