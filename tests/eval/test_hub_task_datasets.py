"""llm-foundry's `dataset_uri: hf://<name>` tasks: rows from `datasets.load_dataset(name, **hf_loading_vars)`, fields
built by `hf_parsing_map` (columns joined with spaces), scored exactly as the same examples from a JSONL file.

Offline, with the real datasets library: `hf://json` is its JSON builder given `data_files`, and `hf:///abs/folder`
a local folder of data files; a hub name goes through the same call.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from eval_helpers import char_tokenizer, task, tiny_mpt

from llmfoundry.config.validation import ConfigError
from llmfoundry.eval.runner import evaluate_task
from llmfoundry.eval.task_config import is_hub_dataset, parse_task
from llmfoundry.interfaces import DistInfo

ONE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device('cpu'))
ROWS = [{'subject': 'the cat', 'verb': 'sat on', 'object': 'the mat', 'id': 1},
        {'subject': 'a dog', 'verb': 'ate', 'object': 'a bone', 'id': 2},
        {'subject': 'birds', 'verb': 'sing', 'object': 'songs', 'id': 3}]
PARSING = {'context': ['subject', 'verb'], 'continuation': ['object']}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(json.dumps(row) + '\n' for row in rows), encoding='utf-8')
    return path


def scores(uri: str, **keys) -> dict:
    tokenizer = char_tokenizer()
    results = evaluate_task(tiny_mpt(len(tokenizer)), tokenizer, task(uri, 'language_modeling', [0, 1], **keys), ONE)
    return {(r.num_fewshot, name): value for r in results for name, value in r.metrics.items()}


def test_a_hub_dataset_scores_as_the_same_examples_from_a_jsonl_file(tmp_path: Path):
    mapped = [{'context': f"{row['subject']} {row['verb']}", 'continuation': row['object']} for row in ROWS]
    expected = scores(str(write_jsonl(tmp_path / 'mapped.jsonl', mapped)))
    raw = write_jsonl(tmp_path / 'raw' / 'train.jsonl', ROWS)
    by_builder = scores('hf://json', hf_loading_vars={'data_files': str(raw), 'split': 'train'},
                        hf_parsing_map=PARSING)
    by_folder = scores(f'hf://{raw.parent}', hf_loading_vars={'split': 'train'}, hf_parsing_map=PARSING)
    assert by_builder == expected and by_folder == expected
    assert set(expected) == {(0, 'InContextLearningLMAccuracy'), (1, 'InContextLearningLMAccuracy')}


def test_hub_dataset_mistakes_say_what_to_set(tmp_path: Path):
    raw = write_jsonl(tmp_path / 'raw' / 'train.jsonl', ROWS)
    with pytest.raises(ConfigError, match=r'the dataset has the splits train; choose one with hf_loading_vars'):
        scores(f'hf://{raw.parent}', hf_parsing_map=PARSING)
    with pytest.raises(ConfigError, match=r'hf_parsing_map names columns the dataset lacks: verbs \(it has subject, '):
        scores(f'hf://{raw.parent}', hf_loading_vars={'split': 'train'},
               hf_parsing_map={'context': ['subject', 'verbs'], 'continuation': ['object']})
    with pytest.raises(ConfigError, match=r"hf://json, row 1: missing field 'continuation'"):
        scores('hf://json', hf_loading_vars={'data_files': str(raw), 'split': 'train'},
               hf_parsing_map={'context': ['subject']})
    with pytest.raises(ConfigError, match=r'datasets.load_dataset\(.*nothing-here.*failed'):
        scores(f'hf://{tmp_path / "nothing-here"}', hf_loading_vars={'split': 'train'})


def test_which_uris_are_hub_datasets():
    entry = {'label': 'x', 'icl_task_type': 'language_modeling', 'num_fewshot': [0]}
    assert is_hub_dataset(parse_task({**entry, 'dataset_uri': 'hf://org/name'}, 0))
    file_in_repo = {**entry, 'dataset_uri': 'hf://datasets/org/repo/eval/task.jsonl'}
    assert not is_hub_dataset(parse_task(file_in_repo, 0))  # read as a JSONL file through storage
    assert is_hub_dataset(parse_task({**file_in_repo, 'hf_loading_vars': {'split': 'train'}}, 0))
    with pytest.raises(ConfigError, match=r"hf_loading_vars and hf_parsing_map apply to a Hugging Face dataset"):
        parse_task({**entry, 'dataset_uri': 'local/task.jsonl', 'hf_parsing_map': {'context': ['a']}}, 0)
