"""`llmfoundry eval` beyond ICL tasks: plain LM loss over eval_loader(s), load_path in every checkpoint form, and
a model sharded with fsdp_config over 2 ranks.

One tiny training run (2 batches, a consolidated checkpoint) feeds the tests: its own end-of-training evaluation
is what the eval command must reproduce from the checkpoint it saved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from eval_helpers import char_tokenizer, write_jsonl
from streaming import MDSWriter

from llmfoundry.cli import main as llmfoundry_main
from llmfoundry.eval.config import load_eval_config
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.train import checkpoint
from llmfoundry.train.entry import main as train

SEQ = 32
SAMPLES = 8  # per split: 2 ranks x 2 batches of 2, so every rank sees whole batches and no sample twice
MODEL = {'name': 'mpt_causal_lm', 'd_model': 32, 'n_heads': 2, 'n_layers': 2, 'vocab_size': 29, 'max_seq_len': SEQ,
         'attn_config': {'attn_impl': 'torch'}}
CE, PPL, ACC = (f'metrics/eval/{m}' for m in ('LanguageCrossEntropy', 'LanguagePerplexity', 'TokenAccuracy'))


def write_mds(folder: Path) -> np.ndarray:
    """train/ and val/ splits of SAMPLES fixed token rows (vocab 29), with some repeated structure to learn; returns
    the val rows."""
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        rows = np.tile(rng.integers(0, 28, size=(SAMPLES, 4)), SEQ // 4)
        rows[:, rng.integers(0, SEQ, size=6)] = rng.integers(0, 28, size=(SAMPLES, 6))
        with MDSWriter(out=str(folder / split), columns={'tokens': 'ndarray:int64'}) as writer:
            for row in rows:
                writer.write({'tokens': row.astype(np.int64)})
    return rows


def loader(folder: Path, split: str) -> dict:
    return {'name': 'text', 'drop_last': False, 'num_workers': 0,
            'dataset': {'local': str(folder / split), 'split': None, 'shuffle': split == 'train', 'max_seq_len': SEQ,
                        'num_canonical_nodes': 1}}


@pytest.fixture(scope='module')
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2-batch training run that evaluates at its end and saves a sharded + consolidated checkpoint."""
    root = tmp_path_factory.mktemp('trained')
    val_rows = write_mds(root / 'mds')
    char_tokenizer().save_pretrained(root / 'tok')
    config = {
        'model': MODEL, 'tokenizer': {'name': str(root / 'tok')}, 'max_seq_len': SEQ, 'run_name': 'tiny',
        'train_loader': loader(root / 'mds', 'train'), 'eval_loader': loader(root / 'mds', 'val'),
        'optimizer': {'name': 'decoupled_adamw', 'lr': 1e-2}, 'scheduler': {'name': 'constant_with_warmup',
                                                                           't_warmup': '0ba'},
        'max_duration': '2ba', 'eval_interval': '2ba', 'global_train_batch_size': 4, 'device_train_microbatch_size': 4,
        'device_eval_batch_size': 2, 'precision': 'fp32', 'seed': 5, 'save_folder': str(root / 'save'),
        'save_interval': '2ba', 'fsdp_config': {'state_dict_type': 'full'}, 'progress_bar': False,
    }
    (root / 'train.yaml').write_text(yaml.safe_dump(config), encoding='utf-8')
    assert train([str(root / 'train.yaml')]) == 0
    records = [json.loads(line) for line in (root / 'save' / 'metrics.jsonl').read_text().splitlines()]
    [training_eval] = [r for r in records if CE in r]
    return {'root': root, 'eval': training_eval, 'checkpoint': checkpoint.find_latest(str(root / 'save')),
            'val_rows': torch.from_numpy(val_rows)}


def eval_yaml(trained: dict, folder: Path, **keys) -> Path:
    root = trained['root']
    gen = write_jsonl(folder / 'gen.jsonl', [{'context': c, 'answer': a} for c, a in
                                             [('say ab', 'ab'), ('say ba', 'ba'), ('say aa', 'aa')]])
    config = {'max_seq_len': SEQ, 'device_eval_batch_size': 2, 'precision': 'fp32', 'run_name': 'tiny', 'seed': 3,
              'icl_tasks': [{'label': 'qa', 'dataset_uri': gen, 'icl_task_type': 'question_answering',
                             'num_fewshot': [1], 'metric_names': ['InContextLearningGenerationExactMatchAccuracy']}],
              **keys}
    if 'models' not in config:
        config.update(model=MODEL, tokenizer={'name': str(root / 'tok')})
    path = folder / 'eval.yaml'
    path.write_text(yaml.safe_dump(config), encoding='utf-8')
    return path


def record_of(folder: Path, model_name: str) -> dict:
    records = [json.loads(line) for line in (folder / 'runs' / 'tiny' / 'metrics.jsonl').read_text().splitlines()]
    return next(r for r in records if r.get('model_name') == model_name)


@torch.no_grad()
def mean_cross_entropy(checkpoint_path: str, rows: torch.Tensor) -> float:
    """The mean next-token cross-entropy over every val row written (one forward, no loader, float64 loss), by the
    model rebuilt from the checkpoint by hand."""
    model = MPTForCausalLM(MPTConfig(**{k: v for k, v in MODEL.items() if k != 'name'})).eval()
    checkpoint.load(checkpoint_path, model, weights_only=True)
    logits = model(input_ids=rows).logits.double()
    return float(F.cross_entropy(logits[:, :-1].flatten(0, 1), rows[:, 1:].flatten()))


@pytest.mark.slow
def test_lm_loss_and_every_load_path_form_match_training(trained: dict, tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    ckpt = trained['checkpoint']
    assert Path(ckpt, checkpoint.CONSOLIDATED_FILE).is_file()
    root = trained['root']
    assert llmfoundry_main(['convert', 'to-hf', ckpt, str(tmp_path / 'hf')]) == 0
    val = loader(root / 'mds', 'val')
    models = [
        {'model_name': 'run_folder', 'model': MODEL, 'tokenizer': {'name': str(root / 'tok')},
         'load_path': str(root / 'save')},
        {'model_name': 'sharded', 'model': MODEL, 'tokenizer': {'name': str(root / 'tok')}, 'load_path': ckpt},
        {'model_name': 'consolidated', 'model': MODEL, 'tokenizer': {'name': str(root / 'tok')},
         'load_path': str(Path(ckpt, checkpoint.CONSOLIDATED_FILE))},
        {'model_name': 'hf_folder', 'model': MODEL, 'tokenizer': {'name': str(root / 'tok')},
         'load_path': str(tmp_path / 'hf')},
        {'model_name': 'untrained', 'model': MODEL, 'tokenizer': {'name': str(root / 'tok')}},
    ]
    path = eval_yaml(trained, tmp_path, models=models, eval_loaders=[{'label': 'first', **val},
                                                                     {'label': 'again', **val}])
    monkeypatch.chdir(tmp_path)
    assert llmfoundry_main(['eval', str(path)]) == 0
    out = capsys.readouterr().out

    expected = mean_cross_entropy(ckpt, trained['val_rows'])
    training = trained['eval']
    assert training[CE] == pytest.approx(expected, rel=1e-6), (training[CE], expected)
    loaded = {name: record_of(tmp_path, name) for name in ('run_folder', 'sharded', 'consolidated', 'hf_folder')}
    for name, record in loaded.items():
        for label in ('first', 'again'):
            got = {m: record[m.replace('metrics/eval/', f'metrics/eval/{label}/')] for m in (CE, PPL, ACC)}
            assert got == pytest.approx({m: training[m] for m in (CE, PPL, ACC)}, rel=1e-6), (name, label, got)
    numbers = [{k: v for k, v in record.items() if k != 'model_name'} for record in loaded.values()]
    assert all(n == numbers[0] for n in numbers)  # the same weights from each form: identical ICL and LM metrics
    untrained = record_of(tmp_path, 'untrained')
    assert abs(untrained['metrics/eval/first/LanguageCrossEntropy'] - expected) > 0.05  # load_path took effect
    assert 'metrics/qa/1-shot/InContextLearningGenerationExactMatchAccuracy' in untrained
    assert f"| first | {training[CE]:g} | {training[PPL]:g} | {training[ACC]:g} | sharded |" in out.splitlines()


def test_bad_loader_and_load_path_values_are_refused(trained: dict, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    val = loader(trained['root'] / 'mds', 'val')
    cases = [
        ({'eval_loader': val, 'eval_loaders': [{'label': 'a', **val}]}, 'Set either eval_loader or eval_loaders'),
        ({'eval_loaders': [val]}, "'eval_loaders[0]' needs a 'label'"),
        ({'eval_loader': val, 'eval_subset_num_batches': 0}, 'eval_subset_num_batches=0: use -1'),
        ({'callbacks': {'speed_monitor': {}}}, "'callbacks': callbacks do not run during `llmfoundry eval`"),
        ({'fsdp_config': {'sharding_strategy': 'ZERO3'}}, "fsdp_config.sharding_strategy='ZERO3' is invalid"),
        ({'fsdp_config': {'sharding': 'FULL_SHARD'}}, "did you mean 'fsdp_config.sharding_strategy'?"),
        ({'load_path': str(tmp_path / 'missing')}, f"load_path={str(tmp_path / 'missing')!r} (model 'mpt_causal_lm')"),
    ]
    for keys, message in cases:
        path = eval_yaml(trained, tmp_path, **keys)
        assert llmfoundry_main(['eval', str(path)]) == 2, keys
        assert message in capsys.readouterr().err, keys
    with pytest.raises(Exception, match='evaluates nothing'):
        load_eval_config(eval_yaml(trained, tmp_path), ['icl_tasks=null'])


@pytest.mark.slow
def test_fsdp_sharded_eval_on_two_ranks_equals_one_process(trained: dict, tmp_path: Path, monkeypatch) -> None:
    """Uneven ICL shares (3 examples on 2 ranks, generation one prompt per batch) run padding forwards on the rank
    with fewer; the LM loss of the eval loader and both load_path forms agree with one unsharded process."""
    root = trained['root']
    mc = write_jsonl(tmp_path / 'mc.jsonl', [{'query': q, 'choices': ['ab', 'ba', 'aa'], 'gold': g}
                                             for q, g in [('x', 1), ('y', 0), ('z', 2)]])
    models = [{'model_name': name, 'model': MODEL, 'tokenizer': {'name': str(root / 'tok')}, 'load_path': path}
              for name, path in [('sharded', trained['checkpoint']),
                                 ('consolidated', str(Path(trained['checkpoint'], checkpoint.CONSOLIDATED_FILE)))]]
    path = eval_yaml(trained, tmp_path, models=models, eval_loader=loader(root / 'mds', 'val'))
    config = yaml.safe_load(path.read_text())
    config['icl_tasks'][0]['batch_size'] = 1
    config['icl_tasks'].append({'label': 'mc', 'dataset_uri': mc, 'icl_task_type': 'multiple_choice',
                                'num_fewshot': [0]})
    path.write_text(yaml.safe_dump(config), encoding='utf-8')
    one = tmp_path / 'one'
    one.mkdir()
    monkeypatch.chdir(one)
    assert llmfoundry_main(['eval', str(path)]) == 0
    two = tmp_path / 'two'
    two.mkdir()
    done = subprocess.run([sys.executable, '-m', 'llmfoundry.cli', 'eval', str(path), '--nproc', '2',
                           'fsdp_config.sharding_strategy=FULL_SHARD', 'dist_timeout=30'],
                          cwd=two, env={**os.environ, 'OMP_NUM_THREADS': '1'}, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ('sharded', 'consolidated'):
        single, sharded = record_of(one, name), record_of(two, name)
        assert single.pop('model_name') == sharded.pop('model_name') == name
        assert single.keys() == sharded.keys()
        assert sharded == pytest.approx(single, rel=1e-6), name  # fp32 sums in another order; accuracies exact
        assert single['metrics/mc/0-shot/InContextLearningMultipleChoiceAccuracy'] in (0, 1 / 3, 2 / 3, 1)
        assert single[CE] == pytest.approx(trained['eval'][CE], rel=1e-9)
