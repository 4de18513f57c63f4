"""Task files that cannot be evaluated fail before any scoring, naming the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from eval_helpers import char_tokenizer, task, tiny_mpt

from llmfoundry.config.validation import ConfigError
from llmfoundry.eval.runner import evaluate_task
from llmfoundry.eval.task_config import parse_task
from llmfoundry.interfaces import DistInfo

ONE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device('cpu'))
GOOD_MC = '{"query": "q", "choices": ["a", "b"], "gold": 0}'


@pytest.mark.parametrize(('task_type', 'text', 'message'), [
    ('multiple_choice', f'{GOOD_MC}\n{{"query": "q", "choices": ["a", "b"]}}\n', "line 2: missing field 'gold'"),
    ('multiple_choice', f'{GOOD_MC}\n\n{{"query": "q", "choices": ["a"], "gold": 3}}\n',
     "line 3: 'gold' must be an index into 'choices' (0 to 0), got 3"),
    ('schema', '{"context_options": ["a", "b"], "continuation": "c", "gold": -1}\n', 'line 1: '),
    ('language_modeling', '{"context": "a"}\n', "line 1: missing field 'continuation'"),
    ('generation_task_with_answers', '{"context": "a", "answer": 3}\n', "line 1: 'context' and 'answer' must be"),
    ('language_modeling', '{"context": "a", "continuation": "b"}\nnot json\n', 'line 2: not valid JSON'),
    ('language_modeling', '\n\n', 'the task file has no examples'),
])
def test_bad_task_file_names_file_and_line(tmp_path: Path, task_type: str, text: str, message: str) -> None:
    path = tmp_path / 'bad.jsonl'
    path.write_text(text, encoding='utf-8')
    tokenizer = char_tokenizer()
    with pytest.raises(ConfigError) as error:
        evaluate_task(tiny_mpt(len(tokenizer)), tokenizer, task(str(path), task_type, [0]), ONE)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_missing_task_file_and_bad_entries_are_config_errors(tmp_path: Path) -> None:
    tokenizer = char_tokenizer()
    with pytest.raises(ConfigError, match='nope.jsonl: cannot read the task file'):
        evaluate_task(tiny_mpt(len(tokenizer)), tokenizer, task(str(tmp_path / 'nope.jsonl'), 'schema', [0]), ONE)
    entry = {'label': 'x', 'dataset_uri': 'x.jsonl', 'icl_task_type': 'schema', 'num_fewshot': 2}
    assert parse_task(entry, 0).num_fewshot == [2]
    with pytest.raises(ConfigError, match=r"unknown key 'icl_tasks\[0\].num_fewshots'"):
        parse_task({**entry, 'num_fewshots': [1]}, 0)
    assert parse_task({**entry, 'pass_at_k': 1, 'generations_per_sample': 1}, 0) == parse_task(entry, 0)
    with pytest.raises(ConfigError, match=r"'icl_tasks\[0\].pass_at_k' applies to code_evaluation tasks only"):
        parse_task({**entry, 'pass_at_k': 10}, 0)
