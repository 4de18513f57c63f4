"""`llmfoundry eval`: an llm-foundry eval YAML in, the results table on stdout and runs/{run_name} with
config.yaml and metrics.jsonl out; 2 ranks give the numbers of 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from eval_helpers import char_tokenizer, write_jsonl

from llmfoundry.cli import main as llmfoundry_main
from llmfoundry.eval.config import load_eval_config
from llmfoundry.eval.entry import build_eval_model, evaluate_model
from llmfoundry.interfaces import DistInfo
from llmfoundry.train.setup import seed_everything

MODEL = {'name': 'mpt_causal_lm', 'd_model': 32, 'n_heads': 2, 'n_layers': 2, 'vocab_size': 29, 'max_seq_len': 256,
         'attn_config': {'attn_impl': 'torch'}}


@pytest.fixture
def eval_yaml(tmp_path: Path) -> Path:
    tokenizer_dir = tmp_path / 'tok'
    char_tokenizer().save_pretrained(tokenizer_dir)
    lm = write_jsonl(tmp_path / 'lm.jsonl', [{'context': c, 'continuation': 'ab', 'category': k}
                                             for c, k in [('xy', 'one'), ('yz', 'two'), ('zx', 'one')]])
    mc = write_jsonl(tmp_path / 'mc.jsonl', [{'query': q, 'choices': ['red', 'blue'], 'gold': g}
                                             for q, g in [('sky', 1), ('rose', 0), ('sea', 1)]])
    gen = write_jsonl(tmp_path / 'gen.jsonl', [{'context': 'say a', 'answer': 'a'}, {'context': 'say b', 'answer': 'b'},
                                               {'context': 'say c', 'answer': 'c', 'aliases': ['cc']}])
    config = {
        'max_seq_len': 64, 'device_eval_batch_size': 2, 'precision': 'fp32', 'run_name': 'tiny', 'seed': 3,
        'models': [{'model_name': 'tiny_mpt', 'model': MODEL, 'tokenizer': {'name': str(tokenizer_dir)}}],
        'icl_tasks': [
            {'label': 'lm', 'dataset_uri': lm, 'icl_task_type': 'language_modeling', 'num_fewshot': [0, 1],
             'has_categories': True},
            {'label': 'mc', 'dataset_uri': mc, 'icl_task_type': 'multiple_choice', 'num_fewshot': [2]},
            {'label': 'qa', 'dataset_uri': gen, 'icl_task_type': 'question_answering', 'num_fewshot': [1]},
        ],
        'eval_gauntlet': {'weighting': 'EQUAL', 'subtract_random_baseline': True, 'rescale_accuracy': True,
                          'categories': [{'name': 'all', 'benchmarks': [
                              {'name': 'mc', 'num_fewshot': 2, 'random_baseline': 0.5},
                              {'name': 'lm', 'num_fewshot': 0, 'random_baseline': 0.0}]}]},
    }
    path = tmp_path / 'eval.yaml'
    path.write_text(yaml.safe_dump(config), encoding='utf-8')
    return path


def last_record(folder: Path) -> dict:
    return json.loads((folder / 'runs' / 'tiny' / 'metrics.jsonl').read_text().splitlines()[-1])


@pytest.mark.slow
def test_eval_writes_table_and_metrics_and_two_ranks_agree(eval_yaml: Path, tmp_path: Path, capsys,
                                                            monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert llmfoundry_main(['eval', str(eval_yaml)]) == 0
    out = capsys.readouterr().out
    assert '| Category | Benchmark | Subtask | Accuracy | Number few shot | Model |' in out
    record = last_record(tmp_path)
    assert (tmp_path / 'runs' / 'tiny' / 'config.yaml').is_file()

    # the same numbers from the library, on a model built the same way
    evaluation, _ = load_eval_config(eval_yaml)
    seed_everything(3)
    info = DistInfo(0, 1, 0, torch.device('cpu'))
    model, tokenizer = build_eval_model(evaluation.models[0], info)
    results = evaluate_model(evaluation, model, tokenizer, info)
    expected = {f'metrics/{r.name}/{m}': v for r in results for m, v in r.metrics.items()}
    assert set(expected) == {
        'metrics/lm/0-shot/one/InContextLearningLMAccuracy', 'metrics/lm/0-shot/two/InContextLearningLMAccuracy',
        'metrics/lm/1-shot/one/InContextLearningLMAccuracy', 'metrics/lm/1-shot/two/InContextLearningLMAccuracy',
        'metrics/mc/2-shot/InContextLearningMultipleChoiceAccuracy',
        'metrics/qa/1-shot/InContextLearningGenerationExactMatchAccuracy'}
    assert {k: record[k] for k in expected} == expected
    mc_accuracy = expected['metrics/mc/2-shot/InContextLearningMultipleChoiceAccuracy']
    assert f'| all | mc |  | {mc_accuracy:g} | 2-shot | tiny_mpt |' in out.splitlines()
    assert '| all | lm | Average | 0 | 0-shot | tiny_mpt |' in out.splitlines()  # every 'ab' is missed
    assert '| all |  | one | 0 | 0-shot | tiny_mpt |' in out.splitlines()
    lm0 = (expected['metrics/lm/0-shot/one/InContextLearningLMAccuracy']
           + expected['metrics/lm/0-shot/two/InContextLearningLMAccuracy']) / 2
    mc = (expected['metrics/mc/2-shot/InContextLearningMultipleChoiceAccuracy'] - 0.5) / 0.5
    assert record['icl/metrics/eval_gauntlet/all'] == pytest.approx((lm0 + mc) / 2)
    assert record['icl/metrics/eval_gauntlet/default_average'] == pytest.approx((lm0 + mc) / 2)

    # one 2-rank launch through the command's launcher: the same record
    two = tmp_path / 'two'
    two.mkdir()
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    done = subprocess.run([sys.executable, '-m', 'llmfoundry.cli', 'eval', str(eval_yaml), '--nproc', '2'],
                          cwd=two, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert last_record(two) == record


def test_unknown_and_unbuilt_keys_are_refused(eval_yaml: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert llmfoundry_main(['eval', str(eval_yaml), 'max_seq_length=3']) == 2
    assert "unknown key 'max_seq_length'; did you mean 'max_seq_len'?" in capsys.readouterr().err
    assert llmfoundry_main(['eval', str(eval_yaml), 'callbacks.speed_monitor.window_size=2']) == 2
    assert "'callbacks': callbacks do not run during `llmfoundry eval`" in capsys.readouterr().err
    assert not (tmp_path / 'runs').exists()
