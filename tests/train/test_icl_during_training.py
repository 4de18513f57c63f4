"""ICL tasks and the eval gauntlet during training: evaluated at eval_interval and at the end, logged under
`llmfoundry eval`'s names with the values a standalone evaluation of the saved checkpoint gives (1 rank, and 2
FSDP2 ranks with uneven shares of the examples); bad ICL keys and task files fail before training."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from config_stub import stub_train_config
from test_trainer_step import batches, make_trainer
from transformers import AutoTokenizer

from llmfoundry.cli import main as llmfoundry_main
from llmfoundry.config.loading import load_train_config
from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.validation import ConfigError
from llmfoundry.eval.during_training import IclEvaluator
from llmfoundry.interfaces import Callback, DistInfo
from llmfoundry.train.entry import main as train

REPO = Path(__file__).resolve().parents[2]
TINY_YAML = REPO / 'yamls' / 'pretrain' / 'mpt-tiny-cpu.yaml'
GAUNTLET_PREFIX = 'icl/metrics/eval_gauntlet/'
# Random code-like words: 41 questions of 2 choices (accuracy in steps of 1/41, so it follows the weights closely),
# 41 continuations; on 2 ranks with batch size 2 one rank runs more forward passes than the other.
WORDS = ['self', 'return', 'import', 'def', 'None', 'value', 'path', 'class', 'if', 'for', 'in', 'as', '(', ')', ':']
_rng = random.Random(0)
QUESTIONS = [
    (' '.join(_rng.choices(WORDS, k=4)), [' '.join(_rng.choices(WORDS, k=2)) for _ in range(2)], _rng.randrange(2))
    for _ in range(41)
]
CONTINUATIONS = [(' '.join(_rng.choices(WORDS, k=4)), ' ' + _rng.choice(WORDS)) for _ in range(41)]
ANSWERS = [(' '.join(_rng.choices(WORDS, k=3)), _rng.choice(WORDS)) for _ in range(9)]


def write_icl_yaml(folder: Path) -> Path:
    """One YAML file holding `icl_tasks` (multiple choice and language modeling, 0 and 1 shots; generation) and
    `eval_gauntlet`, as llm-foundry's tasks and gauntlet files do; the task files beside it."""
    mc, lm, qa = folder / 'mc.jsonl', folder / 'lm.jsonl', folder / 'qa.jsonl'
    mc.write_text(''.join(json.dumps({'query': q, 'choices': c, 'gold': g}) + '\n' for q, c, g in QUESTIONS))
    lm.write_text(''.join(json.dumps({'context': c, 'continuation': t}) + '\n' for c, t in CONTINUATIONS))
    qa.write_text(''.join(json.dumps({'context': c, 'answer': a}) + '\n' for c, a in ANSWERS))
    content = {
        'icl_tasks': [
            {'label': 'code_mc', 'dataset_uri': str(mc), 'icl_task_type': 'multiple_choice', 'num_fewshot': [0, 1]},
            {'label': 'code_lm', 'dataset_uri': str(lm), 'icl_task_type': 'language_modeling', 'num_fewshot': [0, 1]},
            {
                'label': 'code_qa',
                'dataset_uri': str(qa),
                'icl_task_type': 'generation_task_with_answers',
                'num_fewshot': [0],
            },
        ],
        'eval_gauntlet': {
            'weighting': 'EQUAL',
            'subtract_random_baseline': True,
            'rescale_accuracy': True,
            'categories': [
                {
                    'name': 'choices',
                    'benchmarks': [
                        {'name': 'code_mc', 'num_fewshot': 0, 'random_baseline': 0.5},
                        {'name': 'code_mc', 'num_fewshot': 1, 'random_baseline': 0.5},
                    ],
                },
                {'name': 'completion', 'benchmarks': [{'name': 'code_lm', 'num_fewshot': 1, 'random_baseline': 0.0}]},
            ],
        },
    }
    path = folder / 'icl.yaml'
    path.write_text(yaml.safe_dump(content), encoding='utf-8')
    return path


EXPECTED_KEYS = {
    *(f'metrics/code_mc/{k}-shot/InContextLearningMultipleChoiceAccuracy' for k in (0, 1)),
    *(f'metrics/code_lm/{k}-shot/InContextLearningLMAccuracy' for k in (0, 1)),
    'metrics/code_qa/0-shot/InContextLearningGenerationExactMatchAccuracy',
    *(GAUNTLET_PREFIX + name for name in ('choices', 'completion', 'default_average')),
}


def train_overrides(mds_dir: Path, tokenizer_dir: str, save_folder: Path, icl_yaml: Path, *extra: str) -> list[str]:
    return [
        f'variables.data_local={mds_dir}',
        f'variables.tokenizer={tokenizer_dir}',
        'variables.max_seq_len=64',
        'model.vocab_size=1024',
        'model.d_model=64',
        'model.n_layers=2',
        'max_duration=4ba',
        'eval_interval=3ba',
        'global_train_batch_size=4',
        'device_train_microbatch_size=2',
        'device_eval_batch_size=2',
        'train_loader.dataset.num_canonical_nodes=1',
        'callbacks=null',
        f'save_folder={save_folder}',
        'save_interval=100ba',
        f'icl_tasks={icl_yaml}',
        f'eval_gauntlet={icl_yaml}',
        *extra,
    ]


def icl_records(save_folder: Path) -> dict[int, dict[str, float]]:
    """batch -> the ICL metrics logged at that batch's evaluation."""
    records = [json.loads(line) for line in (save_folder / 'metrics.jsonl').read_text().splitlines()]
    return {
        r['batch']: {k: v for k, v in r.items() if k in EXPECTED_KEYS}
        for r in records
        if any(k in EXPECTED_KEYS for k in r)
    }


def standalone_eval(save_folder: Path, tokenizer_dir: str, icl_yaml: Path, run_name: str) -> dict[str, float]:
    """`llmfoundry eval` (in this process) of the run's final checkpoint: its metrics.jsonl record."""
    trained = yaml.safe_load((save_folder / 'config.yaml').read_text())
    checkpoint = save_folder / (save_folder / 'latest').read_text().strip()
    config = {
        'max_seq_len': 64,
        'device_eval_batch_size': 2,
        'precision': 'fp32',
        'run_name': run_name,
        'icl_tasks': str(icl_yaml),
        'eval_gauntlet': str(icl_yaml),
        'model': trained['model'],
        'tokenizer': {'name': tokenizer_dir},
        'load_path': str(checkpoint),
    }
    path = save_folder.parent / f'{run_name}.yaml'
    path.write_text(yaml.safe_dump(config), encoding='utf-8')
    assert llmfoundry_main(['eval', str(path)]) == 0
    return json.loads((Path('runs') / run_name / 'metrics.jsonl').read_text().splitlines()[-1])


def assert_same(logged: dict[str, float], expected: dict[str, float]) -> None:
    for key in EXPECTED_KEYS:
        assert logged[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-12), (key, logged[key], expected[key])


@pytest.mark.slow
def test_icl_during_training_logs_what_a_standalone_eval_of_the_checkpoint_logs(
    mds_dir, tokenizer_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    icl_yaml = write_icl_yaml(tmp_path)
    save_folder = tmp_path / 'run'
    assert (
        train(
            [
                str(TINY_YAML),
                *train_overrides(
                    mds_dir, tokenizer_dir, save_folder, icl_yaml, 'eval_loader=null', 'eval_subset_num_batches=-1'
                ),
            ]
        )
        == 0
    )
    logged = icl_records(save_folder)
    assert sorted(logged) == [3, 4]  # eval_interval, then the end (no eval loader: the ICL tasks alone)
    assert all(set(metrics) == EXPECTED_KEYS for metrics in logged.values())
    expected = standalone_eval(save_folder, tokenizer_dir, icl_yaml, 'standalone')
    assert_same(logged[4], expected)
    accuracies = [v for k, v in expected.items() if k.startswith('metrics/')]
    assert all(0 <= v <= 1 for v in accuracies) and len(set(accuracies)) > 1, accuracies  # not all one value
    mc0 = expected['metrics/code_mc/0-shot/InContextLearningMultipleChoiceAccuracy']
    mc1 = expected['metrics/code_mc/1-shot/InContextLearningMultipleChoiceAccuracy']
    lm1 = expected['metrics/code_lm/1-shot/InContextLearningLMAccuracy']
    # EQUAL weighting, baselines subtracted and rescaled (gauntlet.py), the default average over both categories
    choices = ((mc0 - 0.5) / 0.5 + (mc1 - 0.5) / 0.5) / 2
    assert logged[4][GAUNTLET_PREFIX + 'choices'] == pytest.approx(choices, abs=1e-12)
    assert logged[4][GAUNTLET_PREFIX + 'completion'] == pytest.approx(lm1, abs=1e-12)
    assert logged[4][GAUNTLET_PREFIX + 'default_average'] == pytest.approx((choices + lm1) / 2, abs=1e-12)


@pytest.mark.slow
def test_two_fsdp_ranks_log_what_one_process_evaluates(mds_dir, tokenizer_dir, tmp_path, monkeypatch):
    """Each rank scores its share of the examples (21 and 20 questions: 21 and 20 forward passes; 5 and 4
    generations) in lockstep through the sharded model; the sums over ranks equal one process's evaluation of the
    same checkpoint. An eval loader runs too."""
    monkeypatch.chdir(tmp_path)
    icl_yaml = write_icl_yaml(tmp_path)
    save_folder = tmp_path / 'run2'
    overrides = train_overrides(
        mds_dir,
        tokenizer_dir,
        save_folder,
        icl_yaml,
        'dist_timeout=60',
        'fsdp_config.sharding_strategy=FULL_SHARD',
        'eval_loader.dataset.num_canonical_nodes=1',
        'eval_subset_num_batches=2',
        'icl_subset_num_batches=50',
    )  # 50: more than 41 / 2
    command = [sys.executable, '-m', 'llmfoundry.cli', 'train', str(TINY_YAML), '--nproc', '2', *overrides]
    result = subprocess.run(
        command, env={**os.environ, 'PYTHONUNBUFFERED': '1'}, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logged = icl_records(save_folder)
    assert sorted(logged) == [3, 4]
    assert_same(logged[4], standalone_eval(save_folder, tokenizer_dir, icl_yaml, 'standalone2'))


class EvalResults(Callback):
    def __init__(self) -> None:
        self.at: list[tuple[int, dict[str, float]]] = []

    def eval_end(self, state, logger, metrics) -> None:
        self.at.append((state.timestamp.batch, dict(metrics)))


def test_evaluators_run_at_the_interval_and_the_end_without_eval_loaders(tmp_path):
    """The trainer's side: an evaluator alone makes evaluations happen; its metrics reach eval_end."""
    recorder = EvalResults()
    trainer = make_trainer(tmp_path, batches(3), 4, [recorder], max_duration='3ba', eval_interval='2ba')
    calls = []
    trainer.evaluators = [lambda model: calls.append(model.training) or {'icl/metrics/x': float(len(calls))}]
    trainer.fit()
    assert calls == [False, False]  # in eval mode
    assert recorder.at == [(2, {'icl/metrics/x': 1.0}), (3, {'icl/metrics/x': 2.0})]
    assert trainer.state.model.training


def error_of(*overrides: str) -> str:
    with pytest.raises(ConfigError) as error:
        load_train_config(TINY_YAML, list(overrides))
    return str(error.value)


@pytest.mark.parametrize(
    ('overrides', 'expected'),
    [
        (
            ['eval_gauntlet=g.yaml'],
            'eval_gauntlet needs icl_tasks (the benchmarks it scores); add icl_tasks or remove it.',
        ),
        (
            ['icl_tasks=a.yaml', 'icl_tasks_str=b.yaml'],
            'Set either icl_tasks or icl_tasks_str (both name the same thing), not both.',
        ),
        (
            ['icl_tasks=a.yaml', 'icl_subset_num_batches=0'],
            'icl_subset_num_batches=0 must be a positive integer (or null for the default).',
        ),
        (['icl_max_seq_len=64'], "icl_max_seq_len is not supported yet: the ICL tasks' length is icl_seq_len"),
        (['icl_seq_lenn=64'], "unknown key 'icl_seq_lenn'; did you mean 'icl_seq_len'?"),
    ],
)
def test_bad_icl_keys_are_clear_config_errors(overrides, expected):
    assert error_of(*overrides).startswith(expected)


def test_a_missing_task_file_fails_the_dry_run_naming_the_file(mds_dir, tokenizer_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    icl_yaml = write_icl_yaml(tmp_path)
    (tmp_path / 'lm.jsonl').unlink()
    code = train([str(TINY_YAML), *train_overrides(mds_dir, tokenizer_dir, tmp_path / 'run', icl_yaml), '--dry-run'])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f'Config error: {tmp_path / "lm.jsonl"}: cannot read the task file'), err


def icl_config(**keys) -> TrainConfig:
    return stub_train_config(max_seq_len=64, global_train_batch_size=2, device_eval_batch_size=3,
                             eval_subset_num_batches=5, **keys)


def test_llm_foundry_defaults_and_the_str_keys(tokenizer_dir, tmp_path):
    icl_yaml = write_icl_yaml(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    info = DistInfo(0, 1, 0, torch.device('cpu'))
    evaluator = IclEvaluator(icl_config(icl_tasks_str=str(icl_yaml), eval_gauntlet_str=str(icl_yaml)), tokenizer, info)
    assert [(t.label, t.max_seq_len, t.batch_size) for t in evaluator.tasks] == [
        ('code_mc', 64, 3),
        ('code_lm', 64, 3),
        ('code_qa', 64, 3),
    ]  # max_seq_len, device_eval_batch_size
    assert [c.name for c in evaluator.gauntlet.categories] == ['choices', 'completion']
    assert evaluator.subset_num_batches == 5  # eval_subset_num_batches, as Composer's evaluators take it
    tasks = yaml.safe_load(icl_yaml.read_text())['icl_tasks']
    tasks[0]['max_seq_len'] = 32
    evaluator = IclEvaluator(icl_config(icl_tasks=tasks, icl_seq_len=48, icl_subset_num_batches=2), tokenizer, info)
    assert [t.max_seq_len for t in evaluator.tasks] == [32, 48, 48]  # a task's own, else icl_seq_len
    assert evaluator.gauntlet is None and evaluator.subset_num_batches == 2

    tasks[1]['num_fewshots'] = 1
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'icl_tasks\[1\]\.num_fewshots'; did you mean "
        r"'icl_tasks\[1\]\.num_fewshot'",
    ):
        IclEvaluator(icl_config(icl_tasks=tasks), tokenizer, info)
