"""Any transformers causal LM trains sharded: a tiny Llama, GPT-2 (tied embeddings) and GPT-NeoX run through the real
trainer (build_trainer + fit) under FSDP2 FULL_SHARD with init_device: meta on 2 gloo ranks and reach 1 rank's
losses; meta init reads exactly from_pretrained's weights (pretrained: true) or the same random weights on 1 and 2
ranks (pretrained: false); a DCP checkpoint of the 2-rank run resumes exactly and converts to a Hugging Face folder.

One launch of 2 ranks does all the 2-rank work (`two_rank_results`); the MDS shards come from conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from ranks import collect_from_ranks
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig

from llmfoundry.config.loading import load_train_config
from llmfoundry.config.schema import FSDPConfig
from llmfoundry.models.builders import build_model
from llmfoundry.train.distributed import init_distributed
from llmfoundry.train.parallel import build_mesh, parallelize, unwrapped_name
from llmfoundry.train.setup import build_trainer

REPO = Path(__file__).resolve().parents[2]
VOCAB, SEQ, STEPS = 1024, 64, 4
CONFIGS = {  # no dropout, so 1 and 2 ranks compute the same thing; GPT-2's odd vocabulary shards unevenly
    'llama': LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ),
    'gpt2': GPT2Config(vocab_size=VOCAB - 1, n_embd=32, n_layer=2, n_head=4, n_positions=SEQ, resid_pdrop=0.0,
                       embd_pdrop=0.0, attn_pdrop=0.0),
    'neox': GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=SEQ),
}


def run_yaml(folder: Path, mds_dir: Path, tokenizer_dir: str) -> dict:
    """A tiny training YAML for the hf_causal_lm in `folder`: fp32, 8 samples of 64 tokens per batch."""
    dataset = {'local': str(mds_dir), 'split': 'train', 'shuffle': True, 'max_seq_len': SEQ, 'shuffle_seed': 17,
               'num_canonical_nodes': 1}
    return {
        'max_seq_len': SEQ, 'seed': 17, 'precision': 'fp32', 'max_duration': f'{STEPS}ba', 'eval_interval': '100ba',
        'global_train_batch_size': 8, 'device_train_microbatch_size': 2, 'device_eval_batch_size': 2,
        'model': {'name': 'hf_causal_lm', 'pretrained_model_name_or_path': str(folder), 'init_device': 'meta'},
        'tokenizer': {'name': tokenizer_dir, 'kwargs': {'model_max_length': SEQ}},
        'train_loader': {'name': 'text', 'dataset': dataset, 'drop_last': True, 'num_workers': 0},
        'optimizer': {'name': 'decoupled_adamw', 'lr': 3e-3, 'betas': [0.9, 0.95], 'weight_decay': 0.0},
        'scheduler': {'name': 'constant_with_warmup', 't_warmup': '0ba'},
        'save_interval': '2ba', 'progress_bar': False, 'log_to_console': False,
    }


@pytest.fixture(scope='module')
def inputs(tmp_path_factory: pytest.TempPathFactory, mds_dir: Path, tokenizer_dir: str) -> dict:
    """Tiny pretrained folders (safetensors) and one YAML per model."""
    root = tmp_path_factory.mktemp('hf_fsdp')
    yamls = {}
    for name, config in CONFIGS.items():
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(root / name)
        yamls[name] = root / f'{name}.yaml'
        yamls[name].write_text(yaml.safe_dump(run_yaml(root / name, mds_dir, tokenizer_dir)))
    return {'root': root, 'yamls': yamls}


def fit(yaml_path: Path, run: Path, *overrides: str) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    """Train through the real entry's steps; the full state dict before training (every rank takes part) and the
    trained model."""
    config, resolved = load_train_config(yaml_path, [f'save_folder={run}', *overrides])
    trainer = build_trainer(config, resolved, init_distributed(config.dist_timeout))
    initial = get_model_state_dict(trainer.state.model, options=StateDictOptions(full_state_dict=True))
    trainer.fit()
    return initial, trainer.state.model


def losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    return {r['batch']: r['loss/train/total'] for r in records if 'loss/train/total' in r}


def random_init(folder: Path, mesh: object | None) -> dict[str, torch.Tensor]:
    """pretrained: false on meta, sharded over `mesh` (None: one process), gathered."""
    torch.manual_seed(5)
    model = build_model({'name': 'hf_causal_lm', 'pretrained_model_name_or_path': str(folder), 'pretrained': False,
                         'init_device': 'meta'})
    model = parallelize(model, FSDPConfig(), mesh, precision='fp32')
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def _rank_main(rank: int, world_size: int, root: str, yamls: dict, results: dict) -> None:
    torch.set_num_threads(1)
    fsdp = ['fsdp_config.sharding_strategy=FULL_SHARD', 'fsdp_config.forward_prefetch=true']
    for name, yaml_path in yamls.items():
        extra = ['fsdp_config.activation_checkpointing=true'] if name == 'llama' else []
        initial, model = fit(yaml_path, Path(root) / f'{name}-2', *fsdp, *extra)
        random = random_init(Path(root) / name, build_mesh(FSDPConfig(), world_size, 'cpu'))
        if rank == 0:
            results[name] = {'initial': initial, 'random': random,
                             'buffers': {key: value.clone() for key, value in model.named_buffers()}}
    resumed = Path(root) / 'llama-2-resumed'
    fit(yamls['llama'], resumed, *fsdp, f'load_path={Path(root) / "llama-2" / "ep0-ba2"}')


@pytest.fixture(scope='module')
def two_rank_results(inputs: dict) -> dict:
    yamls = {name: str(path) for name, path in inputs['yamls'].items()}
    return collect_from_ranks(_rank_main, 2, str(inputs['root']), yamls, timeout=240)


@pytest.mark.slow
@pytest.mark.parametrize('name', list(CONFIGS))
def test_two_ranks_train_like_one_from_exact_pretrained_weights(inputs, two_rank_results, name):
    root = inputs['root']
    fit(inputs['yamls'][name], root / f'{name}-1')
    one, two = losses(root / f'{name}-1'), losses(root / f'{name}-2')
    assert sorted(one) == list(range(1, STEPS + 1)) and one[STEPS] < one[1]  # it learns
    assert two == pytest.approx(one, rel=1e-5)
    reference = AutoModelForCausalLM.from_pretrained(root / name).state_dict()
    initial = two_rank_results[name]['initial']
    assert initial.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(initial[key], value), key


@pytest.mark.slow
@pytest.mark.parametrize('name', list(CONFIGS))
def test_random_meta_init_is_the_same_on_one_and_two_ranks(inputs, two_rank_results, name):
    one = random_init(inputs['root'] / name, None)
    two = two_rank_results[name]['random']
    assert one.keys() == two.keys()
    for key, value in one.items():
        assert torch.equal(two[key], value), key
    assert 0.015 < float(one[next(k for k in one if 'embed' in k or 'wte' in k)].std()) < 0.025  # initializer_range


@pytest.mark.slow
def test_sharded_checkpoint_of_an_hf_run_resumes_exactly(inputs, two_rank_results):
    root = inputs['root']
    full, resumed = losses(root / 'llama-2'), losses(root / 'llama-2-resumed')
    assert sorted(resumed) == [3, 4]
    assert resumed == pytest.approx({3: full[3], 4: full[4]}, rel=1e-6)


@pytest.mark.slow
def test_sharded_checkpoint_converts_to_a_folder_transformers_loads(inputs, two_rank_results, tmp_path):
    from llmfoundry.export.cli import main as convert

    root = inputs['root']
    assert convert(['to-hf', str(root / 'llama-2'), str(tmp_path / 'out')]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / 'out').eval()
    trained = AutoModelForCausalLM.from_pretrained(root / 'llama')
    from llmfoundry.train.checkpoint import load

    load(str(root / 'llama-2' / 'ep0-ba4'), trained, weights_only=True)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(exported(input_ids=ids).logits, trained.eval()(input_ids=ids).logits)
    assert not torch.equal(trained.model.embed_tokens.weight,
                           AutoModelForCausalLM.from_pretrained(root / 'llama').model.embed_tokens.weight)


@pytest.mark.slow
@pytest.mark.parametrize('name', list(CONFIGS))
def test_buffers_after_meta_init_equal_a_cpu_build(inputs, two_rank_results, name):
    expected = dict(AutoModelForCausalLM.from_pretrained(inputs['root'] / name).named_buffers())
    buffers = {unwrapped_name(key): value for key, value in two_rank_results[name]['buffers'].items()}
    assert buffers.keys() == expected.keys()
    if name == 'llama':
        assert 'model.rotary_emb.inv_freq' in buffers  # non-persistent: not in any checkpoint
    for key, value in expected.items():
        assert torch.equal(buffers[key], value), key
