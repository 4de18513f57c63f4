"""One entry of `icl_tasks`: llm-foundry's keys and defaults, checked before anything is evaluated."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from llmfoundry.config.loading import load_yaml
from llmfoundry.config.validation import ConfigError, from_dict

from .code_execution import check_local_execution_allowed

CODE_TASK = 'code_evaluation'
SAMPLING_KEYS = ('pass_at_k', 'generations_per_sample')  # code evaluation's; 1 (the default) for any other type


@dataclass
class IclTaskConfig:
    label: str
    dataset_uri: str
    icl_task_type: str
    num_fewshot: list[int]
    metric_names: list[str] | None = None
    max_seq_len: int | None = None  # default: the eval config's max_seq_len
    batch_size: int | None = None  # default: device_eval_batch_size
    prompt_string: str = ''
    example_delimiter: str = '\n'
    continuation_delimiter: str = ' '
    prelimiter: str = ''
    fewshot_random_seed: int = 1234
    has_categories: bool = False
    strip_dataset: bool = True
    generation_kwargs: dict[str, Any] | None = None
    cot_delimiter: str = ''
    early_stopping_criteria: list[str] | None = None
    do_normalization: bool = True
    hf_loading_vars: dict[str, Any] | None = None  # load_dataset's keyword arguments for an hf:// dataset
    hf_parsing_map: dict[str, list[str]] | None = None  # task field -> dataset columns joined with spaces
    pass_at_k: int = 1  # code_evaluation: the k of pass@k
    generations_per_sample: int = 1  # code_evaluation: samples drawn per problem (n >= k)


def parse_task(entry: Any, index: int) -> IclTaskConfig:
    """`icl_tasks[index]` as an IclTaskConfig; `num_fewshot` may be one int or a list, `question_prelimiter`
    is llm-foundry's older name for `prelimiter`."""
    path = f'icl_tasks[{index}]'
    if not isinstance(entry, dict):
        raise ConfigError(f"'{path}' must be a mapping, got {type(entry).__name__}.")
    entry = dict(entry)
    if 'question_prelimiter' in entry:
        if 'prelimiter' in entry:
            raise ConfigError(f"'{path}' sets both 'prelimiter' and 'question_prelimiter' (the same setting).")
        entry['prelimiter'] = entry.pop('question_prelimiter')
    if isinstance(entry.get('num_fewshot'), int) and not isinstance(entry['num_fewshot'], bool):
        entry['num_fewshot'] = [entry['num_fewshot']]
    task = from_dict(IclTaskConfig, entry, path)
    if any(not isinstance(k, int) or isinstance(k, bool) or k < 0 for k in task.num_fewshot):
        raise ConfigError(f"'{path}.num_fewshot' must be non-negative integers, got {task.num_fewshot!r}.")
    _check_sampling(task, path)
    if task.icl_task_type == CODE_TASK:
        check_local_execution_allowed()
    if (task.hf_loading_vars is not None or task.hf_parsing_map is not None) and not is_hub_dataset(task):
        raise ConfigError(f"'{path}': hf_loading_vars and hf_parsing_map apply to a Hugging Face dataset, "
                          f"dataset_uri: hf://<dataset name>; got {task.dataset_uri!r}.")
    return task


def _check_sampling(task: IclTaskConfig, path: str) -> None:
    for key in SAMPLING_KEYS:
        value = getattr(task, key)
        if isinstance(value, bool) or value < 1:
            raise ConfigError(f"'{path}.{key}' must be a whole number >= 1, got {value!r}.")
        if value != 1 and task.icl_task_type != CODE_TASK:
            raise ConfigError(f"'{path}.{key}' applies to {CODE_TASK} tasks only; remove it (or set it to 1).")
    if task.pass_at_k > task.generations_per_sample:
        raise ConfigError(f"'{path}': pass_at_k ({task.pass_at_k}) needs at least as many generations_per_sample "
                          f'({task.generations_per_sample}): set generations_per_sample >= pass_at_k.')


def is_hub_dataset(task: IclTaskConfig) -> bool:
    """Whether dataset_uri names a dataset for `datasets.load_dataset` (llm-foundry's hf://<name>) rather than a
    JSONL file: a file in a hub dataset repo, hf://datasets/<org>/<repo>/<file>.jsonl, is read as a file when no
    hf_* key is set."""
    uri = task.dataset_uri
    if not uri.startswith('hf://'):
        return False
    is_file = uri.startswith('hf://datasets/') and uri.endswith(('.jsonl', '.json'))
    return not is_file or task.hf_loading_vars is not None or task.hf_parsing_map is not None


def with_defaults(task: IclTaskConfig, max_seq_len: int, batch_size: int) -> IclTaskConfig:
    """The task with the eval config's max_seq_len and batch size where the task sets none."""
    return dataclasses.replace(task, max_seq_len=task.max_seq_len or max_seq_len,
                               batch_size=task.batch_size or batch_size)


def load_section(value: Any, key: str) -> Any:
    """`value` itself, or when it is a path, the YAML file's `key` entry (llm-foundry's tasks/gauntlet files)."""
    if not isinstance(value, str):
        return value
    content = load_yaml(value)
    if key not in content:
        raise ConfigError(f"'{key}'={value!r}: the file has no top-level '{key}' key.")
    return content[key]


def load_tasks(value: Any, max_seq_len: int, batch_size: int) -> list[IclTaskConfig]:
    """`icl_tasks` (a list, or the path of a YAML file holding one) with the config's defaults, labels unique."""
    entries = load_section(value, 'icl_tasks')
    if not isinstance(entries, list) or not entries:
        raise ConfigError("'icl_tasks' must be a non-empty list of tasks (or the path of a YAML file holding one).")
    tasks = [with_defaults(parse_task(entry, i), max_seq_len, batch_size) for i, entry in enumerate(entries)]
    labels = [t.label for t in tasks]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise ConfigError(f"'icl_tasks' labels must be unique; repeated: {', '.join(duplicated)}.")
    return tasks
