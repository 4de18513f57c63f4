"""LoRA through `model.peft_config` (models/peft_adapter.py), in one process: the adapter is injected in place
(MPT keeps its class and sequence_id), only its parameters train and reach the optimizer, under activation
checkpointing the frozen base stays bit-identical, and a meta-built MPT starts from the base init with B = 0."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig

from llmfoundry.config.schema import FSDPConfig
from llmfoundry.config.validation import ConfigError
from llmfoundry.models.builders import build_model
from llmfoundry.models.mpt import MPTForCausalLM
from llmfoundry.models.peft_adapter import base_name, is_adapter_parameter
from llmfoundry.optim.optimizers import build_optimizer
from llmfoundry.train.parallel import parallelize, unwrapped_name

VOCAB, SEQ = 64, 16
LORA = {'peft_type': 'LORA', 'task_type': 'CAUSAL_LM', 'r': 4, 'lora_alpha': 8, 'lora_dropout': 0.0,
        'target_modules': ['Wqkv', 'out_proj', 'up_proj', 'down_proj']}
MPT = {'name': 'mpt_causal_lm', 'd_model': 32, 'n_heads': 4, 'n_layers': 2, 'vocab_size': VOCAB, 'max_seq_len': SEQ,
       'attn_config': {'attn_impl': 'torch'}}


def mpt(**keys) -> torch.nn.Module:
    torch.manual_seed(0)  # fixes MPT's init_seed
    return build_model({**MPT, **keys})


def named(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {unwrapped_name(name): param.detach().clone() for name, param in model.named_parameters()}


def test_adapter_is_injected_in_place_and_only_it_is_trainable() -> None:
    model = mpt(peft_config=LORA)
    assert type(model) is MPTForCausalLM
    trainable = sorted(name for name, param in model.named_parameters() if param.requires_grad)
    assert len(trainable) == 2 * 2 * 4  # A and B for 4 targets in each of 2 blocks
    assert all(is_adapter_parameter(name) for name in trainable)
    assert 'transformer.blocks.0.attn.Wqkv.base_layer.weight' in dict(model.named_parameters())
    assert model.transformer.blocks[0].attn.Wqkv.scaling['default'] == 8 / 4
    optimizer = build_optimizer({'name': 'decoupled_adamw', 'lr': 1e-2}, model)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group['params']}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}


def test_training_under_activation_checkpointing_changes_only_the_adapter() -> None:
    model = parallelize(mpt(peft_config=LORA), FSDPConfig(activation_checkpointing=True), None, precision='fp32')
    assert any('_checkpoint_wrapped_module' in name for name, _ in model.named_parameters())
    before = named(model)
    optimizer = build_optimizer({'name': 'decoupled_adamw', 'lr': 1e-2, 'weight_decay': 0.1}, model)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        ids = torch.randint(0, VOCAB, (2, SEQ), generator=generator)
        logits = model(input_ids=ids, sequence_id=torch.zeros_like(ids)).logits
        torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad()
    after = named(model)
    for name, value in before.items():
        if is_adapter_parameter(name):
            assert not torch.equal(after[name], value), name  # lora_A moves once lora_B is no longer zero
        else:
            assert torch.equal(after[name], value), name


def test_meta_init_gives_the_base_init_and_a_zero_delta() -> None:
    adapted = parallelize(mpt(peft_config=LORA, init_device='meta'), None, None)
    plain = named(mpt())
    weights = named(adapted)
    for name, value in weights.items():
        if '.lora_B.' in name:
            assert torch.count_nonzero(value) == 0, name
        elif '.lora_A.' in name:
            bound = 1 / value.shape[1] ** 0.5
            assert 0 < float(value.abs().max()) <= bound and float(value.std()) > bound / 3, name
        else:
            assert torch.equal(value, plain[base_name(name)]), name
    assert len(weights) == len(plain) + 16
    ids = torch.randint(0, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(2))
    assert torch.equal(adapted(input_ids=ids).logits, mpt()(input_ids=ids).logits)


def llama_meta(folder: Path, **keys) -> torch.nn.Module:
    """A meta-built hf_causal_lm Llama of `folder`'s config; its init seed is drawn from torch's generator."""
    torch.manual_seed(0)
    return build_model({'name': 'hf_causal_lm', 'pretrained_model_name_or_path': str(folder), 'init_device': 'meta',
                        'pretrained': False, **keys})


def test_hf_meta_init_without_weights_gives_the_base_init_and_a_zero_delta(tmp_path: Path) -> None:
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    config.save_pretrained(tmp_path)
    lora = {**LORA, 'target_modules': ['q_proj', 'v_proj', 'lm_head']}
    adapted = named(parallelize(llama_meta(tmp_path, peft_config=lora), None, None))
    plain = named(parallelize(llama_meta(tmp_path), None, None))
    for name, value in adapted.items():
        if '.lora_B.' in name:
            assert torch.count_nonzero(value) == 0, name
        elif not is_adapter_parameter(name):  # _init_weights drew exactly what it draws without the adapter
            assert torch.equal(value, plain[base_name(name)]), name
    assert len(adapted) == len(plain) + 2 * (2 * 2 + 1)
    with pytest.raises(ConfigError, match='use_dora'):
        parallelize(llama_meta(tmp_path, peft_config={**lora, 'use_dora': True}), None, None)


def test_meta_init_refuses_what_it_cannot_reproduce() -> None:
    with pytest.raises(ConfigError, match='use_dora'):
        parallelize(mpt(peft_config={**LORA, 'use_dora': True}, init_device='meta'), None, None)


@pytest.mark.parametrize(('change', 'message'), [
    ({'peft_type': 'IA3'}, 'only LORA'),
    ({'task_type': 'SEQ_CLS'}, 'only CAUSAL_LM'),
    ({'rank': 4}, 'rank'),
    ({'target_modules': ['no_such_layer']}, 'no_such_layer'),
])
def test_bad_peft_config_is_one_config_error(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        mpt(peft_config={**LORA, **change})
