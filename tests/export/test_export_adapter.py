"""Exports of a LoRA-adapted model (MPT and an hf_causal_lm Llama): the adapter alone is a folder `peft` loads onto
the base model with the same logits, merged weights go through our exporter with the same logits, and
`pretrained_lora_id_or_path` continues from the saved adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, LlamaConfig

from llmfoundry.export import export_state_dict, load_model
from llmfoundry.models.builders import build_model
from llmfoundry.models.peft_adapter import is_adapter_parameter

VOCAB, SEQ = 64, 16
LORA = {'peft_type': 'LORA', 'task_type': 'CAUSAL_LM', 'r': 4, 'lora_alpha': 8, 'lora_dropout': 0.0}
MPT = {'name': 'mpt_causal_lm', 'd_model': 32, 'n_heads': 4, 'n_layers': 2, 'vocab_size': VOCAB, 'max_seq_len': SEQ,
       'attn_config': {'attn_impl': 'torch'}}
LLAMA = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2)
IDS = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(3))


def nonzero_adapter(model: torch.nn.Module) -> torch.nn.Module:
    """As if trained: lora_B starts at zero, which would make every comparison trivial."""
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if '.lora_B.' in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model.eval()


def mpt(**keys) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model({**MPT, **keys})


@pytest.fixture(scope='module')
def llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp('llama')
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(LLAMA).save_pretrained(folder)
    return folder


def llama(folder: Path, **keys) -> torch.nn.Module:
    return build_model({'name': 'hf_causal_lm', 'pretrained_model_name_or_path': str(folder), **keys})


def test_mpt_adapter_folder_loads_with_peft(tmp_path: Path) -> None:
    adapted = nonzero_adapter(mpt(peft_config={**LORA, 'target_modules': ['Wqkv', 'down_proj']}))
    export_state_dict(adapted, adapted.state_dict(), tmp_path / 'adapter', dtype=None, tokenizer=None,
                      overwrite=False)  # should_save_peft_only defaults to true
    assert sorted(p.name for p in (tmp_path / 'adapter').iterdir()) == ['adapter_config.json',
                                                                         'adapter_model.safetensors']
    config = json.loads((tmp_path / 'adapter' / 'adapter_config.json').read_text())
    assert (config['peft_type'], config['r'], sorted(config['target_modules'])) == ('LORA', 4, ['Wqkv', 'down_proj'])
    loaded = PeftModel.from_pretrained(mpt(), tmp_path / 'adapter').eval()
    assert torch.equal(loaded(input_ids=IDS).logits, adapted(input_ids=IDS).logits)


def test_mpt_merged_export_gives_the_adapted_logits(tmp_path: Path) -> None:
    adapted = nonzero_adapter(mpt(peft_config={**LORA, 'target_modules': ['Wqkv', 'out_proj', 'up_proj']}))
    before = {name: value.clone() for name, value in adapted.state_dict().items()}
    export_state_dict(adapted, adapted.state_dict(), tmp_path / 'merged', dtype='float32', tokenizer=None,
                      overwrite=False, peft_only=False)
    for name, value in adapted.state_dict().items():  # merging works on copies: the trained model is untouched
        assert torch.equal(value, before[name]), name
    merged = load_model(tmp_path / 'merged').eval()
    assert not any('lora' in name or 'base_layer' in name for name, _ in merged.named_parameters())
    expected = adapted(input_ids=IDS).logits
    torch.testing.assert_close(merged(input_ids=IDS).logits, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mpt()(input_ids=IDS).logits, expected, atol=1e-3)  # the adapter does matter


def test_llama_merged_and_adapter_exports(tmp_path: Path, llama_folder: Path) -> None:
    peft_config = {**LORA, 'target_modules': ['q_proj', 'v_proj', 'down_proj'], 'use_rslora': True}
    adapted = nonzero_adapter(llama(llama_folder, peft_config=peft_config, should_save_peft_only=False))
    expected = adapted(input_ids=IDS).logits
    export_state_dict(adapted, adapted.state_dict(), tmp_path / 'merged', dtype=None, tokenizer=None,
                      overwrite=False)  # should_save_peft_only: false -> merged
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / 'merged').eval()
    torch.testing.assert_close(merged(input_ids=IDS).logits, expected, rtol=1e-5, atol=1e-5)
    export_state_dict(adapted, adapted.state_dict(), tmp_path / 'adapter', dtype=None, tokenizer=None,
                      overwrite=False, peft_only=True)
    base = AutoModelForCausalLM.from_pretrained(llama_folder)
    assert torch.equal(PeftModel.from_pretrained(base, tmp_path / 'adapter').eval()(input_ids=IDS).logits, expected)


def test_pretrained_lora_id_or_path_continues_from_the_saved_adapter(tmp_path: Path, llama_folder: Path) -> None:
    adapted = nonzero_adapter(llama(llama_folder, peft_config={**LORA, 'target_modules': ['q_proj', 'o_proj']}))
    export_state_dict(adapted, adapted.state_dict(), tmp_path / 'adapter', dtype=None, tokenizer=None,
                      overwrite=False)
    resumed = llama(llama_folder, pretrained_lora_id_or_path=str(tmp_path / 'adapter'))
    saved = {name: p for name, p in adapted.named_parameters() if is_adapter_parameter(name)}
    loaded = {name: p for name, p in resumed.named_parameters() if p.requires_grad}
    assert loaded.keys() == saved.keys() and len(saved) == 8
    for name, value in saved.items():
        assert torch.equal(loaded[name], value), name
    assert torch.equal(resumed.eval()(input_ids=IDS).logits, adapted(input_ids=IDS).logits)
