"""One entry of `icl_tasks`: llm-foundry's keys and defaults, checked before anything is evaluated."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from llmfoundry.config.validation import ConfigError, from_dict

# Keys llm-foundry accepts that need something this package does not have: say so instead of ignoring them.
NOT_BUILT = {
    'pass_at_k': 'code evaluation (pass@k) is not built',
    'hf_loading_vars': 'hf:// task datasets are not supported; download the JSONL file and give its path',
    'hf_parsing_map': 'hf:// task datasets are not supported; download the JSONL file and give its path',
}


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


def parse_task(entry: Any, index: int) -> IclTaskConfig:
    """`icl_tasks[index]` as an IclTaskConfig; `num_fewshot` may be one int or a list, `question_prelimiter`
    is llm-foundry's older name for `prelimiter`."""
    path = f'icl_tasks[{index}]'
    if not isinstance(entry, dict):
        raise ConfigError(f"'{path}' must be a mapping, got {type(entry).__name__}.")
    entry = dict(entry)
    for key, why in NOT_BUILT.items():
        if key in entry:
            raise ConfigError(f"'{path}.{key}': {why}.")
    if 'question_prelimiter' in entry:
        if 'prelimiter' in entry:
            raise ConfigError(f"'{path}' sets both 'prelimiter' and 'question_prelimiter' (the same setting).")
        entry['prelimiter'] = entry.pop('question_prelimiter')
    if isinstance(entry.get('num_fewshot'), int) and not isinstance(entry['num_fewshot'], bool):
        entry['num_fewshot'] = [entry['num_fewshot']]
    task = from_dict(IclTaskConfig, entry, path)
    if any(not isinstance(k, int) or isinstance(k, bool) or k < 0 for k in task.num_fewshot):
        raise ConfigError(f"'{path}.num_fewshot' must be non-negative integers, got {task.num_fewshot!r}.")
    return task


def with_defaults(task: IclTaskConfig, max_seq_len: int, batch_size: int) -> IclTaskConfig:
    """The task with the eval config's max_seq_len and batch size where the task sets none."""
    return dataclasses.replace(task, max_seq_len=task.max_seq_len or max_seq_len,
                               batch_size=task.batch_size or batch_size)
