"""convert_dataset_json: JSON Lines files (the `text` field of each line) -> one MDS dataset at out_root."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator

from llmfoundry import storage
from llmfoundry.data.documents import JSON_SUFFIXES, iter_jsonl, list_files
from llmfoundry.data.errors import DataError
from llmfoundry.data.prep.pipeline import ConvertSpec, write_documents
from llmfoundry.data.prep.progress import Stats


def json_files(path: str) -> list[str]:
    """A .jsonl/.json file, a folder of them (recursively) or a glob pattern, in sorted order."""
    if any(ch in path for ch in '*?['):
        files = sorted(glob.glob(path, recursive=True))
    elif os.path.isdir(path):
        files = [str(p) for p in list_files(path, JSON_SUFFIXES)]
    elif os.path.isfile(path):
        files = [path]
    else:
        raise DataError(f"--path '{path}' does not exist")
    if not files:
        raise DataError(f"--path '{path}' matches no .jsonl/.json files")
    return files


def json_documents(files: list[str]) -> Iterator[str]:
    for path in files:
        yield from iter_jsonl(path)


def convert_json(
    path: str, out_root: str, split: str, spec: ConvertSpec, report: Callable[[Stats], None] = lambda s: None
) -> Stats:
    # JSON files form a single split, like `datasets.load_dataset('json', data_files=path)` does.
    if split != 'train':
        raise DataError(f"--split '{split}': JSON files form one split, 'train'")
    files = json_files(path)
    storage.check_writable(out_root)
    return write_documents(json_documents(files), out_root, spec, report=report)
