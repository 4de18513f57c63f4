"""LoRA through the real trainer (build_trainer + fit) under FSDP2 FULL_SHARD on 2 gloo ranks, with frozen and
trainable parameters in one fully_shard group: an MPT built on meta with activation checkpointing, and an
hf_causal_lm Llama whose hf_checkpointer writes the adapter alone (should_save_peft_only). Only the adapter
changes; the DCP checkpoint holds it and converts to merged weights or to the adapter alone. The MPT run resumed
from its own checkpoint repeats the uninterrupted run exactly; one started from a pretraining checkpoint (no
adapter) takes its weights as the base weights, weights only. A Llama built on meta reads its base weights from
the pretrained safetensors by their names without the adapter, and a saved adapter (pretrained_lora_id_or_path)
from its adapter_model.safetensors, each rank its own slices.

One launch of 2 ranks does all the 2-rank work (`runs`); the MDS shards come from conftest.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from ranks import collect_from_ranks
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import AutoModelForCausalLM, LlamaConfig

from llmfoundry.config.not_built import without_unset
from llmfoundry.config.schema import TOP_LEVEL_HINT, TrainConfig
from llmfoundry.config.time import Timestamp
from llmfoundry.config.validation import from_dict
from llmfoundry.export import load_model
from llmfoundry.export.from_checkpoint import model_from_checkpoint
from llmfoundry.models.builders import build_model
from llmfoundry.models.peft_adapter import adapter_file_key, base_name, is_adapter_parameter
from llmfoundry.train.checkpoint import CheckpointParts, SaveSettings, layout, save
from llmfoundry.train.distributed import init_distributed
from llmfoundry.train.setup import build_trainer

VOCAB, SEQ, STEPS = 1024, 64, 3
LORA = {'peft_type': 'LORA', 'task_type': 'CAUSAL_LM', 'r': 4, 'lora_alpha': 8, 'lora_dropout': 0.0}
MODELS = {
    'mpt': {'name': 'mpt_causal_lm', 'd_model': 32, 'n_heads': 4, 'n_layers': 2, 'vocab_size': VOCAB,
            'max_seq_len': SEQ, 'attn_config': {'attn_impl': 'torch'}, 'init_device': 'meta',
            'peft_config': {**LORA, 'target_modules': ['Wqkv', 'out_proj', 'up_proj', 'down_proj']}},
    'llama': {'name': 'hf_causal_lm', 'init_device': 'cpu',
              'peft_config': {**LORA, 'target_modules': ['q_proj', 'v_proj', 'o_proj']}},
    'llama_meta': {'name': 'hf_causal_lm', 'init_device': 'meta',
                   'peft_config': {**LORA, 'target_modules': ['q_proj', 'v_proj', 'lm_head']}},
}
ADAPTED_LAYERS = {'mpt': 2 * 4, 'llama': 2 * 3, 'llama_meta': 2 * 2 + 1}  # each with a lora_A and a lora_B
EXPORTED = ['mpt', 'llama']  # the runs whose checkpoints are converted
LLAMA = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ)


def run_config(model: dict, run: Path, mds_dir: str, tokenizer_dir: str) -> dict:
    """A tiny fp32 training config: FULL_SHARD with activation checkpointing, a checkpoint at the end."""
    dataset = {'local': mds_dir, 'split': 'train', 'shuffle': True, 'max_seq_len': SEQ, 'shuffle_seed': 17,
               'num_canonical_nodes': 1}
    return {
        'max_seq_len': SEQ, 'seed': 17, 'precision': 'fp32', 'max_duration': f'{STEPS}ba', 'eval_interval': '100ba',
        'global_train_batch_size': 8, 'device_train_microbatch_size': 2, 'device_eval_batch_size': 2, 'model': model,
        'tokenizer': {'name': tokenizer_dir, 'kwargs': {'model_max_length': SEQ}},
        'train_loader': {'name': 'text', 'dataset': dataset, 'drop_last': True, 'num_workers': 0},
        'optimizer': {'name': 'decoupled_adamw', 'lr': 1e-2, 'betas': [0.9, 0.95], 'weight_decay': 0.1},
        'scheduler': {'name': 'constant_with_warmup', 't_warmup': '0ba'},
        'fsdp_config': {'sharding_strategy': 'FULL_SHARD', 'activation_checkpointing': True},
        'save_folder': str(run), 'save_interval': f'{STEPS}ba', 'progress_bar': False, 'log_to_console': False,
        'callbacks': {'hf_checkpointer': {'save_folder': str(run), 'save_interval': f'{STEPS}ba'}},
    }


def fit(resolved: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The full state dict before and after training (every rank takes part in gathering)."""
    # Built from the dataclass: the YAML loader still refuses peft_config as not built (config/not_built.py).
    config = from_dict(TrainConfig, without_unset(resolved), hint_unknown=TOP_LEVEL_HINT)
    trainer = build_trainer(config, resolved, init_distributed(config.dist_timeout))
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    initial = get_model_state_dict(trainer.state.model, options=options)
    trainer.fit()
    return initial, get_model_state_dict(trainer.state.model, options=options)


def _rank_main(rank: int, world_size: int, configs: dict, results: dict) -> None:
    torch.set_num_threads(1)
    for name, resolved in configs.items():
        initial, final = fit(resolved)
        if rank == 0:
            results[name] = {'initial': initial, 'final': final}


def save_adapter(base: Path, folder: Path) -> None:
    """A peft adapter of `base` with a non-zero delta (lora_B drawn at random), as PeftModel saves it."""
    from peft import LoraConfig, get_peft_model

    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=4, lora_alpha=8, target_modules=['q_proj', 'v_proj'], task_type='CAUSAL_LM'))
    with torch.no_grad():
        for name, param in adapted.named_parameters():
            if '.lora_B.' in name:
                param.normal_()
    adapted.save_pretrained(folder)


def save_pretraining_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    """A full checkpoint at batch 5 of the MPT without the adapter (another init); its weights."""
    model = build_model({key: value for key, value in MODELS['mpt'].items() if key != 'peft_config'}
                        | {'init_device': 'cpu', 'init_config': {'init_std': 0.5}})
    parts = CheckpointParts(model, torch.optim.AdamW(model.parameters()), Timestamp(batch=5))
    save(SaveSettings(str(folder)), parts, rank=0, world_size=1)
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def extra_runs(configs: dict, root: Path) -> None:
    """The runs that are not a plain 3-batch LoRA run: each after the run it reads, without hf_checkpointer."""
    configs['mpt']['save_interval'] = '2ba'  # ep0-ba2 to resume from (and ep0-ba3 at the end)
    configs['mpt_resumed'] = {**configs['mpt'], 'save_folder': str(root / 'mpt_resumed'),
                              'load_path': str(root / 'mpt' / 'ep0-ba2'), 'callbacks': {}}
    configs['mpt_pretrained'] = {**configs['mpt_resumed'], 'save_folder': str(root / 'mpt_pretrained'),
                                 'load_path': str(root / 'pretrain' / 'ep0-ba5'), 'max_duration': '1ba'}
    adapter_model = {'name': 'hf_causal_lm', 'init_device': 'meta', 'pretrained_model_name_or_path':
                     str(root / 'llama-base'), 'pretrained_lora_id_or_path': str(root / 'adapter')}
    configs['llama_adapter'] = {**configs['llama_meta'], 'model': adapter_model, 'max_duration': '1ba',
                                'save_folder': str(root / 'llama_adapter')}
    configs['llama_meta']['callbacks'] = configs['llama_adapter']['callbacks'] = {}


@pytest.fixture(scope='module')
def runs(tmp_path_factory: pytest.TempPathFactory, mds_dir: Path, tokenizer_dir: str) -> dict:
    root = tmp_path_factory.mktemp('peft_fsdp')
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(LLAMA).save_pretrained(root / 'llama-base')
    save_adapter(root / 'llama-base', root / 'adapter')
    pretrained = save_pretraining_checkpoint(root / 'pretrain')
    for name in ('llama', 'llama_meta'):
        MODELS[name]['pretrained_model_name_or_path'] = str(root / 'llama-base')
    configs = {name: run_config(model, root / name, str(mds_dir), tokenizer_dir) for name, model in MODELS.items()}
    extra_runs(configs, root)
    results = collect_from_ranks(_rank_main, 2, configs, timeout=240)
    return {'root': root, 'pretrained': pretrained, **results}


def losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    return [r['loss/train/total'] for r in records if 'loss/train/total' in r]


@pytest.mark.slow
@pytest.mark.parametrize('name', list(MODELS))
def test_two_rank_fsdp_training_changes_only_the_adapter(runs, name):
    initial, final = runs[name]['initial'], runs[name]['final']
    assert initial.keys() == final.keys()
    adapter = [key for key in initial if is_adapter_parameter(key)]
    assert len(adapter) == 2 * ADAPTED_LAYERS[name]
    for key, value in initial.items():
        if key in adapter:
            assert not torch.equal(final[key], value), key
        else:
            assert torch.equal(final[key], value), key
    found = losses(runs['root'] / name)
    assert len(found) == STEPS and all(math.isfinite(loss) for loss in found)


@pytest.mark.slow
@pytest.mark.parametrize('name', EXPORTED)
def test_checkpoint_holds_the_adapter_and_converts_merged_or_alone(runs, name, tmp_path):
    from llmfoundry.export.cli import main as convert

    checkpoint = runs['root'] / name / f'ep0-ba{STEPS}'
    restored = model_from_checkpoint(checkpoint)
    state = restored.state_dict()
    for key, value in runs[name]['final'].items():
        assert torch.equal(state[key], value), key
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    expected = restored(input_ids=ids).logits
    assert convert(['to-hf', str(checkpoint), str(tmp_path / 'merged')]) == 0
    assert convert(['to-hf', str(checkpoint), str(tmp_path / 'adapter'), '--adapter-only']) == 0
    assert (tmp_path / 'adapter' / 'adapter_model.safetensors').is_file()
    merged = (load_model if name == 'mpt' else AutoModelForCausalLM.from_pretrained)(tmp_path / 'merged').eval()
    torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
    if name == 'llama':
        base = AutoModelForCausalLM.from_pretrained(runs['root'] / 'llama-base')
        loaded = PeftModel.from_pretrained(base, tmp_path / 'adapter').eval()
        assert torch.equal(loaded(input_ids=ids).logits, expected)


@pytest.mark.slow
def test_hf_checkpointer_writes_the_adapter_alone(runs):
    folder = runs['root'] / 'llama' / 'huggingface' / f'ba{STEPS}'
    assert (folder / 'adapter_config.json').is_file() and not (folder / 'model.safetensors').exists()
    base = AutoModelForCausalLM.from_pretrained(runs['root'] / 'llama-base')
    loaded = PeftModel.from_pretrained(base, folder)
    state = dict(loaded.named_parameters())
    for key, value in runs['llama']['final'].items():
        if is_adapter_parameter(key):
            assert torch.equal(state[f'base_model.model.{key}'], value), key


@pytest.mark.slow
def test_a_lora_run_resumed_from_its_own_checkpoint_repeats_the_uninterrupted_run(runs):
    saved = layout.read_metadata(str(runs['root'] / 'mpt' / 'ep0-ba2')).state_dict_metadata
    state = [key.removeprefix('optim.state.') for key in saved if key.startswith('optim.state.')]
    in_optimizer = {key.rsplit('.', 1)[0] for key in state}  # '<parameter>.exp_avg' and the like
    assert len(in_optimizer) == 2 * 2 * 4 and all(is_adapter_parameter(name) for name in in_optimizer)
    assert losses(runs['root'] / 'mpt_resumed') == losses(runs['root'] / 'mpt')[2:]
    for key, value in runs['mpt']['final'].items():
        assert torch.equal(runs['mpt_resumed']['final'][key], value), key


@pytest.mark.slow
def test_hf_meta_init_under_lora_starts_from_the_pretrained_weights(runs):
    initial = runs['llama_meta']['initial']
    base = AutoModelForCausalLM.from_pretrained(runs['root'] / 'llama-base').eval()
    expected = base.state_dict()
    for key, value in initial.items():
        if '.lora_B.' in key:
            assert torch.count_nonzero(value) == 0, key
        elif '.lora_A.' in key:  # peft's kaiming-uniform init
            assert 0 < float(value.abs().max()) <= 1 / value.shape[1] ** 0.5, key
        else:
            assert torch.equal(value, expected[base_name(key)]), key
    adapted = build_model({**MODELS['llama_meta'], 'init_device': 'cpu'})
    adapted.load_state_dict(initial)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(adapted.eval()(input_ids=ids).logits, base(input_ids=ids).logits)


@pytest.mark.slow
def test_meta_init_reads_a_saved_adapter_into_the_shards(runs):
    initial = runs['llama_adapter']['initial']
    adapter = load_file(runs['root'] / 'adapter' / 'adapter_model.safetensors')
    base = load_file(runs['root'] / 'llama-base' / 'model.safetensors')
    assert sum(map(is_adapter_parameter, initial)) == len(adapter) == 2 * 2 * 2
    for key, value in initial.items():
        expected = adapter[adapter_file_key(key)] if is_adapter_parameter(key) else base[base_name(key)]
        assert torch.equal(value, expected), key
    assert len(losses(runs['root'] / 'llama_adapter')) == 1


@pytest.mark.slow
def test_a_pretraining_checkpoint_loads_as_the_base_weights_of_a_lora_run(runs):
    initial = runs['mpt_pretrained']['initial']
    for key, value in initial.items():
        if '.lora_B.' in key:
            assert torch.count_nonzero(value) == 0, key
        elif not is_adapter_parameter(key):
            assert torch.equal(value, runs['pretrained'][base_name(key)]), key
    assert len(losses(runs['root'] / 'mpt_pretrained')) == 1  # from batch 0: the checkpoint's batch 5 is not taken
