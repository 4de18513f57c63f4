"""Read documents from files (local or object storage): whole text files, or the `text` field of JSON Lines."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from llmfoundry import storage
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


def list_input_files(root: str, suffixes: tuple[str, ...]) -> dict[str, int]:
    """{file: size in bytes} of the `suffixes` files under a local folder or object-storage prefix (or `root`
    itself when it is one file), recursively, sorted by path; hidden files are left out."""
    if not storage.is_remote(root):
        return {str(p): p.stat().st_size for p in list_files(root, suffixes)}
    fs, path = storage.filesystem(root, 'input')
    fs.invalidate_cache()
    if fs.isfile(path):
        return {root: fs.size(path)}
    found = fs.find(path, detail=True)
    if not found:
        raise DataError(f"input '{root}' does not exist or is empty")
    return {
        fs.unstrip_protocol(name): int(info['size']) for name, info in sorted(found.items())
        if name.endswith(suffixes) and not any(part.startswith('.') for part in name[len(path):].split('/'))
    }  # fmt: skip


def _read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return storage.read_bytes(str(path)) if storage.is_remote(str(path)) else Path(path).read_bytes()
    except OSError as err:  # a missing, unreadable or vanished file
        raise DataError(f'{path}: cannot read: {err.strerror or err}') from err


def read_text_file(path: str | os.PathLike) -> str:
    data = _read_bytes(path)
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as err:
        raise DataError(f'{path}: not UTF-8 text ({err.reason} at byte {err.start})') from err


def _open_binary(path: str | os.PathLike) -> IO[bytes]:
    try:
        if storage.is_remote(str(path)):
            fs, inner = storage.filesystem(str(path), 'input')
            return fs.open(inner, 'rb')
        return open(path, 'rb')
    except OSError as err:
        raise DataError(f'{path}: cannot read: {err.strerror or err}') from err


def iter_jsonl(path: str | os.PathLike, key: str = 'text') -> Iterator[str]:
    """The `key` field of each non-blank line; a malformed line raises DataError naming file:line."""
    with _open_binary(path) as f:
        try:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode('utf-8')
                except UnicodeDecodeError as err:
                    raise DataError(f'{path}:{lineno}: not UTF-8 text ({err.reason} at byte {err.start})') from err
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f'{path}:{lineno}: malformed JSON: {err.msg} (column {err.colno})') from err
                if not isinstance(record, dict) or not isinstance(record.get(key), str):
                    raise DataError(f"{path}:{lineno}: expected a JSON object with a string field '{key}'")
                yield record[key]
        except OSError as err:  # a read failing midway (a vanished file, a lost connection)
            raise DataError(f'{path}: cannot read: {err.strerror or err}') from err


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
