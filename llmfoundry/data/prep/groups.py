"""Restartable conversions in groups: the machinery every converter shares, whatever runs the groups.

The input is cut into a fixed list of groups; group i becomes its own sub-dataset `group_NNNNN/` (its token
buffer starts empty). A group is complete when its index.json exists (output.MDSOutput writes it last), so a
rerun skips complete groups and redoes the rest, and every attempt at a group first removes what an earlier
attempt left. At the end the group indexes are merged into the top-level index.json and the done marker is
written last. The same grouping therefore always gives the same bytes, whichever executor ran the groups
(`local_executor`: processes of this machine; `ray_executor`: Ray tasks on a cluster).

Layout of the output folder:
    .conversion_args.json   settings + input fingerprint; a rerun with other settings is refused
    group_00000/ ...        complete sub-datasets (index.json + shards)
    index.json              merged index over all groups
    .conversion_done        written last: the folder is complete
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from llmfoundry import storage
from llmfoundry.data.documents import iter_jsonl, read_text_file
from llmfoundry.data.errors import DataError
from llmfoundry.data.mds_writer import merge_indexes
from llmfoundry.data.prep.pipeline import ConvertSpec, write_documents
from llmfoundry.data.prep.progress import Progress, Stats

ARGS_FILE = '.conversion_args.json'
DONE_MARKER = '.conversion_done'
INDEX = 'index.json'
# Test hook: after this many groups complete, SIGKILL this process group (the converter and its
# workers), like `kill -9` of the job mid-run. Run the command in its own session when using it.
CRASH_ENV = 'LLMFOUNDRY_CRASH_AFTER_GROUPS'


def group_name(index: int) -> str:
    return f'group_{index:05d}'


def plan_groups(items: Sequence[Any], n: int) -> list[list[Any]]:
    """`n` contiguous groups (fewer if there are fewer items), sizes differing by at most one."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    groups, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        groups.append(list(items[start:end]))
        start = end
    return groups


def files_fingerprint(root: str, sizes: dict[str, int], spec: ConvertSpec, n_groups: int) -> dict:
    """What decides the output bytes of a conversion of files: settings plus each file's relative path and size."""
    relpath = posixpath.relpath if storage.is_remote(root) else os.path.relpath
    digest = hashlib.sha256()
    for path, size in sizes.items():
        digest.update(f'{relpath(path, root) if path != root else ""}\0{size}\n'.encode())
    return {'spec': asdict(spec), 'groups': n_groups, 'files': len(sizes), 'inputs_sha256': digest.hexdigest()}


class DocumentSource(Protocol):
    """Picklable: it travels to worker processes and Ray tasks, which read their group's documents."""

    def documents(self, group: list[Any]) -> Iterator[str]: ...

    def describe(self, group: list[Any]) -> str: ...


def _describe_files(group: list[str]) -> str:
    return group[0] if len(group) == 1 else f'{group[0]} .. {group[-1]} ({len(group)} files)'


@dataclass(frozen=True)
class TextFiles:
    """One document per file."""

    def documents(self, group: list[str]) -> Iterator[str]:
        return (read_text_file(path) for path in group)

    def describe(self, group: list[str]) -> str:
        return _describe_files(group)


@dataclass(frozen=True)
class JsonLinesFiles:
    """The `text` field of every line of every file."""

    def documents(self, group: list[str]) -> Iterator[str]:
        for path in group:
            yield from iter_jsonl(path)

    def describe(self, group: list[str]) -> str:
        return _describe_files(group)


@dataclass(frozen=True)
class GroupJob:
    """A conversion cut into groups: what each group reads (`groups`, given to `source`) and where it goes."""

    command: str  # names the progress bar
    out: str
    spec: ConvertSpec
    source: DocumentSource
    groups: list[list[Any]]
    fingerprint: dict


class Executor(Protocol):
    def run(self, job: GroupJob, todo: list[int], progress: Progress) -> Iterator[Stats]:
        """Convert the `todo` groups with `convert_group`, yielding each one's stats as it completes."""
        ...


def convert_group(job: GroupJob, index: int, report: Callable[[Stats], None] = lambda stats: None) -> Stats:
    """One attempt at group `index`: clear an earlier attempt's debris, then write the group's sub-dataset."""
    dest = storage.join(job.out, group_name(index))
    storage.remove(dest)  # never a complete group: those are not redone
    group = job.groups[index]
    return write_documents(
        job.source.documents(group), dest, job.spec, report=report, source=job.source.describe(group)
    )


def _prepare_output(out: str, fingerprint: dict, reprocess: bool) -> bool:
    """Check/record the settings; True when the folder already holds this exact, complete conversion."""
    args_url, done_url = storage.join(out, ARGS_FILE), storage.join(out, DONE_MARKER)
    ours = storage.exists(args_url)
    if not ours and not storage.is_empty(out):
        raise DataError(f"output '{out}' is not empty and holds no conversion of ours; choose another")
    if ours and reprocess:
        storage.remove(done_url)
        storage.remove(storage.join(out, INDEX))
        extra = fingerprint['groups']  # groups of an earlier run with more groups
        while storage.exists(storage.join(out, group_name(extra))):
            storage.remove(storage.join(out, group_name(extra)))
            extra += 1
    elif ours:
        previous = json.loads(storage.read_text(args_url))
        if previous != fingerprint:
            changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
            raise DataError(
                f"output '{out}' holds a conversion with other settings or inputs ({', '.join(changed)} "
                'differ); pass --reprocess to redo it, or choose another folder'
            )
        if storage.exists(done_url):
            return True
    storage.write_text(args_url, json.dumps(fingerprint, indent=1, sort_keys=True))
    return False


def _merge_indexes(out: str, n_groups: int) -> None:
    """Merge the groups' index.json files (as streaming's merge_index would), then publish index.json whole."""
    parts = [(group_name(i), storage.read_text(storage.join(out, group_name(i), INDEX))) for i in range(n_groups)]
    storage.write_text(storage.join(out, INDEX), merge_indexes(parts))


def _crash_after() -> int | None:
    value = os.environ.get(CRASH_ENV)
    return int(value) if value else None


def run_grouped(job: GroupJob, executor: Executor, reprocess: bool = False) -> tuple[Stats, int]:
    """Run (or resume) the conversion; returns (stats of the work done now, number of groups skipped)."""
    n = len(job.groups)
    if _prepare_output(job.out, job.fingerprint, reprocess):
        return Stats(), n
    todo = [i for i in range(n) if reprocess or not storage.exists(storage.join(job.out, group_name(i), INDEX))]
    stats, crash_after, completed = Stats(), _crash_after(), 0
    progress = Progress(job.command, total_groups=len(todo))
    try:
        for group_stats in executor.run(job, todo, progress):
            stats.add(group_stats)
            completed += 1
            if crash_after is not None and completed >= crash_after:
                os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        progress.close()
    _merge_indexes(job.out, n)
    stats.seconds = progress.elapsed()
    storage.write_text(storage.join(job.out, DONE_MARKER), json.dumps(asdict(stats)))
    return stats, n - len(todo)
