"""Mixture-of-experts models are refused as such (never as an unknown key): MPT's megablocks FFNs, any moe_* key,
and Hugging Face MoE architectures (DBRX, Mixtral, ...), before any other not-built feature of the same YAML."""

from __future__ import annotations

import json

import pytest

from llmfoundry.config.not_built import check_not_built
from llmfoundry.config.validation import ConfigError

MOE = ': mixture-of-experts (MoE) models are not supported (no expert-parallel FFN is built); use a dense model ' \
      '(ffn_type mptmlp or mptglu).'


def refusal(config: dict) -> str:
    with pytest.raises(ConfigError) as error:
        check_not_built(config)
    return str(error.value)


@pytest.mark.parametrize(('model', 'what'), [
    ({'name': 'mpt_causal_lm', 'ffn_config': {'ffn_type': 'mb_moe', 'moe_num_experts': 8}},
     'model.ffn_config.ffn_type=mb_moe'),
    ({'name': 'mpt_causal_lm', 'ffn_config': {'ffn_type': 'mb_dmoe'}}, 'model.ffn_config.ffn_type=mb_dmoe'),
    ({'name': 'mpt_causal_lm', 'ffn_config': {'ffn_type': 'mptglu', 'moe_top_k': 2, 'moe_num_experts': 4}},
     'model.ffn_config.moe_num_experts'),  # the first moe_* key in order
    ({'name': 'hf_causal_lm', 'pretrained_model_name_or_path': 'gpt2',
      'config_overrides': {'ffn_config': {'moe_top_k': 1}}}, 'model.config_overrides.ffn_config.moe_top_k'),
    ({'name': 'hf_causal_lm', 'pretrained_model_name_or_path': 'databricks/dbrx-instruct'},
     'model.pretrained_model_name_or_path=databricks/dbrx-instruct (a dbrx model)'),
])
def test_moe_models_are_refused_with_the_moe_message(model, what):
    assert refusal({'model': model}) == what + MOE


def test_a_local_hugging_face_moe_folder_is_recognised_by_its_model_type(tmp_path):
    (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'mixtral', 'num_local_experts': 8}))
    assert refusal({'model': {'name': 'hf_causal_lm', 'pretrained_model_name_or_path': str(tmp_path)}}) == (
        f'model.pretrained_model_name_or_path={tmp_path} (a mixtral model)' + MOE)


def test_dense_models_pass(tmp_path):
    (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'mistral'}))
    check_not_built({'model': {'name': 'hf_causal_lm', 'pretrained_model_name_or_path': str(tmp_path)}})
    check_not_built({'model': {'name': 'mpt_causal_lm', 'ffn_config': {'ffn_type': 'mptglu'}}})
    check_not_built({'model': {'name': 'hf_causal_lm', 'pretrained_model_name_or_path': 'no/such-model'}})


def test_moe_is_named_before_icl_and_finetuning():
    config = {'model': {'name': 'mpt_causal_lm', 'ffn_config': {'ffn_type': 'mb_moe'}}, 'icl_max_seq_len': 1024,
              'train_loader': {'name': 'finetuning'}}
    assert refusal(config) == 'model.ffn_config.ffn_type=mb_moe' + MOE
