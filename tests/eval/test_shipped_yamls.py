"""The eval YAMLs shipped in scripts/eval/yamls load through our config loader (the task files they name are
downloaded by users and are not read here), and the gauntlet names only tasks and shot counts the tasks file has."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfoundry.config.loading import load_yaml
from llmfoundry.eval.config import load_eval_config
from llmfoundry.eval.gauntlet import parse_gauntlet
from llmfoundry.eval.task_config import parse_task
from llmfoundry.registry import icl_task_types, models

SCRIPTS = Path(__file__).resolve().parents[2] / 'scripts'
YAMLS = SCRIPTS / 'eval' / 'yamls'
COMMON = {
    'lambada_openai',
    'piqa',
    'hellaswag',
    'arc_easy',
    'arc_challenge',
    'copa',
    'boolq',
    'winograd',
    'winogrande',
    'jeopardy',
    'triviaqa_sm_sub',
    'squad',
    'gsm8k',
    'mmlu',
}
CATEGORIES = [
    'world_knowledge',
    'commonsense_reasoning',
    'language_understanding',
    'symbolic_problem_solving',
    'reading_comprehension',
]


def test_tasks_and_gauntlet_files_agree() -> None:
    tasks = [parse_task(entry, i) for i, entry in enumerate(load_yaml(YAMLS / 'tasks.yaml')['icl_tasks'])]
    gauntlet = parse_gauntlet(load_yaml(YAMLS / 'eval_gauntlet.yaml')['eval_gauntlet'])

    labels = [task.label for task in tasks]
    assert len(labels) == len(set(labels)) == 32
    assert set(labels) >= COMMON
    for task in tasks:
        assert task.icl_task_type in icl_task_types.names(), task
        assert task.dataset_uri.startswith('eval/local_data/') and task.dataset_uri.endswith('.jsonl'), task
    shots = {(task.label, k) for task in tasks for k in task.num_fewshot}
    benchmarks = [(b.name, b.num_fewshot) for category in gauntlet.categories for b in category.benchmarks]
    missing = [b for b in benchmarks if b not in shots]
    assert not missing, f'gauntlet benchmarks without a task and shot count in tasks.yaml: {missing}'
    assert set(labels) - {name for name, _ in benchmarks} == {'bigbench_cs_algorithms'}  # reported, not averaged
    assert [c.name for c in gauntlet.categories] == CATEGORIES
    assert gauntlet.averages == {'core_average': CATEGORIES}
    assert (gauntlet.weighting, gauntlet.subtract_random_baseline, gauntlet.rescale_accuracy) == ('EQUAL', True, True)
    baselines = {b.name: b.random_baseline for c in gauntlet.categories for b in c.benchmarks}
    assert all(0.0 <= value < 1.0 for value in baselines.values())
    assert (baselines['lambada_openai'], baselines['hellaswag'], baselines['copa']) == (0.0, 0.25, 0.5)

    by_label = {task.label: task for task in tasks}
    gsm8k = by_label['gsm8k']
    assert (gsm8k.icl_task_type, gsm8k.num_fewshot, gsm8k.cot_delimiter) == (
        'generation_task_with_answers',
        [0],
        'The answer is ',
    )
    assert gsm8k.early_stopping_criteria == ['\n\n', 'Question:']
    assert (by_label['winogrande'].icl_task_type, by_label['winogrande'].num_fewshot) == ('schema', [5])
    assert by_label['piqa'].continuation_delimiter == '\nAnswer: '
    assert by_label['jeopardy'].has_categories and by_label['mmlu'].has_categories


@pytest.mark.parametrize(
    ('name', 'model_names', 'builders'),
    [
        ('hf_eval.yaml', ['EleutherAI/gpt-neo-125m', 'mosaicml/mpt-7b'], ['hf_causal_lm', 'hf_causal_lm']),
        ('mpt_eval.yaml', ['mpt-125m'], ['mpt_causal_lm']),
    ],
)
def test_example_eval_yamls_load(
    name: str, model_names: list[str], builders: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """They name the tasks and gauntlet files relative to scripts/, where the docs run them from."""
    monkeypatch.chdir(SCRIPTS)
    evaluation, _ = load_eval_config(f'eval/yamls/{name}')
    assert [m.model_name for m in evaluation.models] == model_names
    assert [m.model['name'] for m in evaluation.models] == builders
    assert set(builders) <= set(models.names())
    assert all(m.tokenizer['kwargs']['model_max_length'] == evaluation.config.max_seq_len for m in evaluation.models)
    assert len(evaluation.tasks) == 32
    assert all(task.max_seq_len == evaluation.config.max_seq_len and task.batch_size == 4 for task in evaluation.tasks)
    assert evaluation.gauntlet is not None and len(evaluation.gauntlet.categories) == 5
