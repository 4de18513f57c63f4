"""Reading an ICL task's examples: JSON lines from a local path or any storage URL, one example per line; or, for
llm-foundry's `dataset_uri: hf://<dataset name>`, the rows `datasets.load_dataset(name, **hf_loading_vars)` gives,
each task field made by `hf_parsing_map` from the columns it lists, joined with spaces (llm-foundry's rule)."""

from __future__ import annotations

import json
from typing import Any

from llmfoundry import storage
from llmfoundry.config.validation import ConfigError


class TaskFileError(ConfigError):
    """A task file that cannot be evaluated; the message names the file and, where it applies, the line."""


def read_task_file(uri: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) for every non-blank line of `uri`, in file order."""
    try:
        text = storage.read_text(uri)
    except (OSError, storage.StorageError) as error:
        raise TaskFileError(f'{uri}: cannot read the task file ({error})') from error
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise TaskFileError(f'{uri}, line {number}: not valid JSON ({error.msg})') from error
        if not isinstance(record, dict):
            raise TaskFileError(f'{uri}, line {number}: expected a JSON object, got {type(record).__name__}')
        records.append((number, record))
    if not records:
        raise TaskFileError(f'{uri}: the task file has no examples')
    return records


def strip_strings(record: dict[str, Any]) -> dict[str, Any]:
    """llm-foundry strips whitespace from every top-level string field (`strip_dataset`, on by default);
    strings inside lists (choices, context options, aliases) are left as they are."""
    return {key: value.strip() if isinstance(value, str) else value for key, value in record.items()}


def read_hub_dataset(uri: str, loading_vars: dict[str, Any] | None,
                     parsing_map: dict[str, list[str]] | None) -> list[tuple[int, dict[str, Any]]]:
    """(row number from 1, record) for every row of the dataset `uri` (hf://<name>) names."""
    import datasets  # a second or more to import: only tasks that use it pay

    name, kwargs = uri.removeprefix('hf://'), dict(loading_vars or {})
    try:
        dataset = datasets.load_dataset(name, **kwargs)
    except Exception as error:  # noqa: BLE001 - the hub, the builders and the network raise many kinds
        raise TaskFileError(f'{uri}: datasets.load_dataset({name!r}, **{kwargs}) failed: {error}') from error
    if isinstance(dataset, datasets.DatasetDict):
        raise TaskFileError(f'{uri}: the dataset has the splits {", ".join(dataset)}; choose one with '
                            'hf_loading_vars: {split: <name>}.')
    rows = dataset.to_list()
    if parsing_map:
        missing = sorted({column for columns in parsing_map.values() for column in columns} - set(dataset.column_names))
        if missing:
            raise TaskFileError(f'{uri}: hf_parsing_map names columns the dataset lacks: {", ".join(missing)} '
                                f'(it has {", ".join(dataset.column_names)}).')
        rows = [{field: ' '.join(str(row[column]) for column in columns) for field, columns in parsing_map.items()}
                for row in rows]
    if not rows:
        raise TaskFileError(f'{uri}: the dataset has no examples')
    return list(enumerate(rows, start=1))
