"""convert_dataset_json: JSON Lines files (the `text` field of each line) -> MDS at out_root.

Without groups: one dataset, written in this process. With groups (--num-tasks, or --executor ray): the sorted
files are cut into contiguous groups, converted as `groups.run_grouped` does (restartable, one merged index).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator

from llmfoundry import storage
from llmfoundry.data.documents import JSON_SUFFIXES, iter_jsonl, list_input_files
from llmfoundry.data.errors import DataError
from llmfoundry.data.prep.groups import Executor, GroupJob, JsonLinesFiles, files_fingerprint, plan_groups, run_grouped
from llmfoundry.data.prep.pipeline import ConvertSpec, write_documents
from llmfoundry.data.prep.progress import Stats


def json_files(path: str) -> dict[str, int]:
    """{file: size} of a .jsonl/.json file, a folder or object-storage prefix of them (recursively) or a local
    glob pattern, in sorted order."""
    if storage.is_remote(path):
        files = list_input_files(path, JSON_SUFFIXES)
    elif any(ch in path for ch in '*?['):
        files = {p: os.path.getsize(p) for p in sorted(glob.glob(path, recursive=True))}
    elif os.path.exists(path):
        files = list_input_files(path, JSON_SUFFIXES) if os.path.isdir(path) else {path: os.path.getsize(path)}
    else:
        raise DataError(f"--path '{path}' does not exist")
    if not files:
        raise DataError(f"--path '{path}' matches no .jsonl/.json files")
    return files


def json_documents(files: list[str]) -> Iterator[str]:
    for path in files:
        yield from iter_jsonl(path)


def _check_split(split: str) -> None:
    # JSON files form a single split, like `datasets.load_dataset('json', data_files=path)` does.
    if split != 'train':
        raise DataError(f"--split '{split}': JSON files form one split, 'train'")


def convert_json(
    path: str, out_root: str, split: str, spec: ConvertSpec, report: Callable[[Stats], None] = lambda s: None
) -> Stats:
    """One dataset at out_root, written in this process."""
    _check_split(split)
    files = json_files(path)
    storage.check_writable(out_root)
    return write_documents(json_documents(list(files)), out_root, spec, report=report)


def convert_json_grouped(
    path: str, out_root: str, split: str, spec: ConvertSpec, n_groups: int, executor: Executor,
    reprocess: bool = False,
) -> tuple[Stats, int]:  # fmt: skip
    """The files in `n_groups` groups run by `executor`; returns (stats of the work done now, groups skipped)."""
    _check_split(split)
    files = json_files(path)
    storage.check_writable(out_root)
    groups = plan_groups(list(files), n_groups)
    job = GroupJob(
        'convert_dataset_json',
        out_root,
        spec,
        JsonLinesFiles(),
        groups,
        files_fingerprint(path, files, spec, len(groups)),
    )
    return run_grouped(job, executor, reprocess)
