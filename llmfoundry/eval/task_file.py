"""Reading an ICL task file: JSON lines from a local path or any storage URL, one example per line."""

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
