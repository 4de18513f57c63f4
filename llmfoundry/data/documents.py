"""Read documents from local files: whole text files, or the `text` field of JSON Lines."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from llmfoundry.data.errors import DataError

log = logging.getLogger(__name__)

JSON_SUFFIXES = ('.jsonl', '.json')


def list_files(root: str | os.PathLike, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    """Files under `root` (or `root` itself), recursively, sorted by path so order is reproducible."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"input '{root}' does not exist")
    found = [p for p in root.rglob('*') if p.is_file() and not p.name.startswith('.')]
    if suffixes is not None:
        found = [p for p in found if p.name.endswith(suffixes)]
    return sorted(found)


def read_text_file(path: str | os.PathLike) -> str:
    try:
        return Path(path).read_text(encoding='utf-8')
    except UnicodeDecodeError as err:
        raise DataError(f'{path}: not UTF-8 text ({err.reason} at byte {err.start})') from err


def iter_jsonl(path: str | os.PathLike, key: str = 'text') -> Iterator[str]:
    """The `key` field of each non-blank line; a malformed line raises DataError naming file:line."""
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f'{path}:{lineno}: malformed JSON: {err.msg} (column {err.colno})') from err
            if not isinstance(record, dict) or not isinstance(record.get(key), str):
                raise DataError(f"{path}:{lineno}: expected a JSON object with a string field '{key}'")
            yield record[key]


def iter_documents(inputs: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Documents from files or folders: JSON Lines files give one per line, other files one per file.

    Inside folders, files that are not UTF-8 (e.g. __pycache__/*.pyc) are skipped with a warning; a
    file named explicitly must be text.
    """
    for item in inputs:
        in_folder = Path(item).is_dir()
        for path in list_files(item):
            if path.name.endswith(JSON_SUFFIXES):
                yield from iter_jsonl(path)
                continue
            try:
                yield read_text_file(path)
            except DataError as err:
                if not in_folder:
                    raise
                log.warning('skipping %s', err)
