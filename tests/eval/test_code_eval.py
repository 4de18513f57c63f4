"""code_evaluation (llm-foundry's HumanEval-style tasks): generations cut at the function's end, run against the
test cases in fresh interpreters, scored by the unbiased pass@k estimate; refused unless CODE_EVAL_DEVICE=LOCAL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from eval_helpers import char_tokenizer, ids, task, tiny_mpt, write_jsonl

from llmfoundry.config.validation import ConfigError
from llmfoundry.eval import runner
from llmfoundry.eval.code_execution import count_passing, passes
from llmfoundry.eval.metrics import first_block, pass_at_k
from llmfoundry.eval.runner import build_task, evaluate_task
from llmfoundry.eval.task_config import parse_task
from llmfoundry.interfaces import DistInfo

ONE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device('cpu'))
ADD = 'def add(a, b):\n'
PROBLEMS = [
    {'task_id': 'add', 'prompt': ADD, 'entry_point': 'add', 'canonical_solution': '    return a + b\n',
     'test': '', 'test_inputs': ['1, 2', '"a", "b"'], 'test_outputs': ['3', "'ab'"], 'language': 'python'},
    {'task_id': 'neg', 'prompt': 'def neg(x):\n', 'entry_point': 'neg', 'canonical_solution': '    return -x\n',
     'test': '', 'test_inputs': ['5,'], 'test_outputs': ['-5'], 'language': 'python'},
]


@pytest.fixture
def local(monkeypatch):
    monkeypatch.setenv('CODE_EVAL_DEVICE', 'LOCAL')


@pytest.mark.parametrize(('code', 'test_input', 'test_output', 'expected'), [
    (ADD + '    return a + b\n', '1, 2', '3', True),
    (ADD + '    return a + b\n', '1, 2', '4', False),
    (ADD + '    return a + b\n', '"x", "y"', 'xy', True),  # an output that is no expression compares as a string
    (ADD + '    raise ValueError\n', '1, 2', '3', False),
    (ADD + '    return a +\n', '1, 2', '3', False),  # a syntax error
    ('import sys\n' + ADD + '    sys.exit(0)\n', '1, 2', '3', False),
])
def test_a_case_passes_only_when_the_entry_point_returns_the_output(code, test_input, test_output, expected):
    assert passes(code, 'add', test_input, test_output) is expected


def test_a_case_that_runs_too_long_fails_and_leaves_no_process_behind(tmp_path: Path):
    pid_file = tmp_path / 'pid'
    code = ('import subprocess, time\n'
            'def slow():\n'
            f'    child = subprocess.Popen(["sleep", "60"]); open({str(pid_file)!r}, "w").write(str(child.pid))\n'
            '    time.sleep(60)\n')
    assert not passes(code, 'slow', '()', 'None', timeout=2)
    status = Path(f'/proc/{int(pid_file.read_text())}/status')
    for _ in range(100):  # SIGKILL is delivered asynchronously
        if not status.exists() or 'State:\tZ' in status.read_text():
            break  # gone, or dead and not yet reaped
        time.sleep(0.05)
    else:
        pytest.fail(f'the process the code started still runs: {status.read_text().splitlines()[2]}')


def test_a_generation_counts_when_it_passes_every_case(monkeypatch):
    codes = [ADD + '    return a + b\n', ADD + '    return a * b\n', ADD + '    return 3\n']
    cases = [('1, 2', '3'), ('2, 2', '4')]  # a * b passes the second only, the constant the first only
    assert count_passing(codes, 'add', cases) == 1
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '1000')  # more ranks on this machine than cores: one case at a time
    assert count_passing(codes, 'add', cases) == 1


def test_pass_at_k_and_the_cut():
    assert pass_at_k(4, 2, 1) == pytest.approx(0.5)
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 3, 2) == 1.0
    assert first_block('    return a + b\n\nprint(add(1, 2))\n') == '    return a + b\n'
    assert first_block('    x = 1\n    # comment\n# top-level comment\n') == '    x = 1\n    # comment'


def test_problems_are_sampled_cut_run_and_scored(tmp_path: Path, local, monkeypatch):
    tokenizer = char_tokenizer()
    uri = write_jsonl(tmp_path / 'code.jsonl', PROBLEMS)
    config = task(uri, 'code_evaluation', [0, 1], pass_at_k=2, generations_per_sample=4, max_seq_len=120,
                  batch_size=3)
    samples = {ADD: ['    return a + b\nprint("junk after the function")', '    return a - b\n',
                     '    return a + b\n', 'garbage('],
               'def neg(x):\n': ['    return -x\n'] * 4}
    calls = []

    def fake_generate(model, tokenizer, prompts, **kwargs):  # prompts come problem by problem, 4 of each
        calls.append((prompts, kwargs))
        return [samples[PROBLEMS[i // 4]['prompt']][i % 4] for i in range(len(prompts))]

    monkeypatch.setattr(runner, 'generate_answers', fake_generate)
    results = evaluate_task(tiny_mpt(len(tokenizer)), tokenizer, config, ONE)
    # add: 2 of 4 samples pass (the junk after the function is cut off): pass@2 = 5/6; neg: all pass
    assert [r.metrics for r in results] == [{'InContextLearningCodeEvalAccuracy': pytest.approx((5 / 6 + 1) / 2)}] * 2
    prompts, kwargs = calls[0]
    problems = build_task(config, tokenizer).examples(PROBLEMS, 0, uri)
    assert prompts == [problem.context for problem in problems for _ in range(4)]  # each problem, 4 times
    assert prompts[0] == ids(tokenizer, ADD + ' ')  # prompt, then continuation_delimiter; nothing stripped
    longest_solution = len(tokenizer('    return a + b\n', add_special_tokens=False)['input_ids'])
    assert kwargs['max_new_tokens'] == longest_solution + 10
    assert kwargs['generation_kwargs'] == {'do_sample': True, 'temperature': 0.2}
    assert kwargs['batch_size'] == 3


def test_a_real_model_generates_and_is_scored(tmp_path: Path, local):
    tokenizer = char_tokenizer()
    config = task(write_jsonl(tmp_path / 'code.jsonl', PROBLEMS), 'code_evaluation', [0], generations_per_sample=2,
                  generation_kwargs={'max_new_tokens': 6, 'temperature': 0.8})
    torch.manual_seed(0)
    (result,) = evaluate_task(tiny_mpt(len(tokenizer)), tokenizer, config, ONE)
    # the char tokenizer cannot even spell '+' or '-': no sample of an untrained model passes
    assert result.size == 2 and result.metrics == {'InContextLearningCodeEvalAccuracy': 0.0}


def test_code_tasks_need_consent_python_and_enough_samples(tmp_path: Path, monkeypatch, local):
    entry = {'label': 'c', 'dataset_uri': 'c.jsonl', 'icl_task_type': 'code_evaluation', 'num_fewshot': [0]}
    monkeypatch.delenv('CODE_EVAL_DEVICE')
    with pytest.raises(ConfigError, match='runs the code the model writes on this machine.*CODE_EVAL_DEVICE=LOCAL'):
        parse_task(entry, 0)
    monkeypatch.setenv('CODE_EVAL_DEVICE', 'lambda')
    with pytest.raises(ConfigError, match="it is 'lambda'.*Remote executors"):
        parse_task(entry, 0)
    monkeypatch.setenv('CODE_EVAL_DEVICE', 'local')
    assert parse_task({**entry, 'pass_at_k': 2, 'generations_per_sample': 5}, 0).pass_at_k == 2
    with pytest.raises(ConfigError, match=r'pass_at_k \(3\) needs at least as many generations_per_sample \(1\)'):
        parse_task({**entry, 'pass_at_k': 3}, 0)
    mc = {**entry, 'icl_task_type': 'multiple_choice'}
    assert parse_task({**mc, 'pass_at_k': 1, 'generations_per_sample': 1}, 0) == parse_task(mc, 0)
    with pytest.raises(ConfigError, match=r"'icl_tasks\[0\].generations_per_sample' applies to code_evaluation"):
        parse_task({**mc, 'generations_per_sample': 4}, 0)
    cpp = write_jsonl(tmp_path / 'cpp.jsonl', [{**PROBLEMS[0], 'language': 'c++'}])
    tokenizer = char_tokenizer()
    with pytest.raises(ConfigError, match=r"line 1: language 'c\+\+': only python code runs here"):
        evaluate_task(tiny_mpt(len(tokenizer)), tokenizer, task(cpp, 'code_evaluation', [0]), ONE)
