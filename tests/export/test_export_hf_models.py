"""export_state_dict writes a folder transformers loads with identical logits, for MPT and for any other model
(tied GPT-2, Llama, GPT-NeoX), in float32 or bfloat16, atomically, with the tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_hf import TINY_CONFIGS, VOCAB, fixed_logits, word_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmfoundry.export import export_state_dict
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM


@pytest.mark.parametrize('name', list(TINY_CONFIGS))
def test_any_transformers_model_round_trips_with_identical_logits(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(TINY_CONFIGS[name])
    model.config.use_cache = False  # as hf_causal_lm trains; the folder is for inference
    export_state_dict(model, model.state_dict(), tmp_path / 'out', dtype='float32', tokenizer=word_tokenizer(),
                      overwrite=False)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / 'out')
    assert type(loaded) is type(model)
    assert torch.equal(fixed_logits(loaded), fixed_logits(model))
    assert loaded.config.use_cache
    assert AutoTokenizer.from_pretrained(tmp_path / 'out')('w3 w5')['input_ids'] == [3, 5]
    if name == 'gpt2':  # the tied weight is stored once and tied again on load
        assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_bfloat16_and_overwrite(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(TINY_CONFIGS['llama'])
    out = tmp_path / 'out'
    export_state_dict(model, model.state_dict(), out, dtype='bfloat16', tokenizer=None, overwrite=False)
    assert json.loads((out / 'config.json').read_text())['dtype'] == 'bfloat16'
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype='auto')
    assert loaded.model.embed_tokens.weight.dtype == torch.bfloat16
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight.bfloat16())
    with pytest.raises(FileExistsError):
        export_state_dict(model, model.state_dict(), out, dtype='float32', tokenizer=None, overwrite=False)
    export_state_dict(model, model.state_dict(), out, dtype='float32', tokenizer=None, overwrite=True)
    assert torch.equal(fixed_logits(AutoModelForCausalLM.from_pretrained(out)), fixed_logits(model))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out']  # no staging folder left behind


def test_mpt_goes_through_the_mpt_exporter(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MPTForCausalLM(MPTConfig(d_model=16, n_heads=4, n_layers=2, vocab_size=VOCAB, max_seq_len=32,
                                     no_bias=True, attn_config={'attn_impl': 'torch', 'alibi': True}))
    export_state_dict(model, model.state_dict(), tmp_path / 'out', dtype='float32', tokenizer=None, overwrite=False)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / 'out')
    assert type(loaded).__name__ == 'MptForCausalLM'
    assert (fixed_logits(loaded) - fixed_logits(model)).abs().max().item() <= 1e-5


def test_missing_weights_and_foreign_models_are_refused(tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_config(TINY_CONFIGS['neox'])
    state = {k: v for k, v in model.state_dict().items() if 'embed_out' not in k}
    with pytest.raises(ValueError, match='lacks embed_out.weight'):
        export_state_dict(model, state, tmp_path / 'a', dtype=None, tokenizer=None, overwrite=False)
    with pytest.raises(TypeError, match='neither llmfoundry MPT nor a transformers PreTrainedModel'):
        export_state_dict(torch.nn.Linear(2, 2), {}, tmp_path / 'b', dtype=None, tokenizer=None, overwrite=False)
    assert not list(tmp_path.iterdir())
