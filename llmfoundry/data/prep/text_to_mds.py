"""convert_text_to_mds: a folder of .txt files (one document each) -> MDS, in restartable groups.

The sorted file list is cut into `processes` contiguous groups; each group becomes its own
sub-dataset `group_NNNNN/` (its token buffer starts empty), written by its own process. A group is
complete when its index.json exists (see output.MDSOutput), so a rerun skips complete groups and
redoes the rest. At the end the group indexes are merged into the top-level index.json and the done
marker is written last. The same --processes therefore always gives the same bytes.

Layout of the output folder:
    .conversion_args.json   settings + input fingerprint; a rerun with other settings is refused
    group_00000/ ...        complete sub-datasets (index.json + shards)
    index.json              merged index over all groups
    .conversion_done        written last: the folder is complete
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict

from streaming.base.util import merge_index

from llmfoundry import storage
from llmfoundry.data.documents import list_files, read_text_file
from llmfoundry.data.errors import DataError
from llmfoundry.data.prep.pipeline import ConvertSpec, write_documents
from llmfoundry.data.prep.progress import Progress, Stats

ARGS_FILE = '.conversion_args.json'
DONE_MARKER = '.conversion_done'
INDEX = 'index.json'
TEXT_SUFFIX = '.txt'
# Test hook: after this many groups complete, SIGKILL this process group (the converter and its
# workers), like `kill -9` of the job mid-run. Run the command in its own session when using it.
CRASH_ENV = 'LLMFOUNDRY_CRASH_AFTER_GROUPS'


def group_name(index: int) -> str:
    return f'group_{index:05d}'


def plan_groups(files: list[str], processes: int) -> list[list[str]]:
    """`processes` contiguous groups (fewer if there are fewer files), sizes differing by at most one."""
    n = max(1, min(processes, len(files)))
    size, extra = divmod(len(files), n)
    groups, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        groups.append(files[start:end])
        start = end
    return groups


def _fingerprint(root: str, files: list[str], spec: ConvertSpec, n_groups: int) -> dict:
    """What decides the output bytes: settings plus each input file's relative path and size."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f'{os.path.relpath(path, root)}\0{os.path.getsize(path)}\n'.encode())
    return {'spec': asdict(spec), 'groups': n_groups, 'files': len(files), 'inputs_sha256': digest.hexdigest()}


def _prepare_output(out: str, fingerprint: dict, reprocess: bool) -> bool:
    """Check/record the settings; True when the folder already holds this exact, complete conversion."""
    args_url, done_url = storage.join(out, ARGS_FILE), storage.join(out, DONE_MARKER)
    ours = storage.exists(args_url)
    if not ours and not storage.is_empty(out):
        raise DataError(f"--output_folder '{out}' is not empty and holds no conversion of ours; choose another")
    if ours and reprocess:
        storage.remove(done_url)
        storage.remove(storage.join(out, INDEX))
        extra = fingerprint['groups']  # groups of an earlier run with more --processes
        while storage.exists(storage.join(out, group_name(extra))):
            storage.remove(storage.join(out, group_name(extra)))
            extra += 1
    elif ours:
        previous = json.loads(storage.read_text(args_url))
        if previous != fingerprint:
            changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
            raise DataError(
                f"--output_folder '{out}' holds a conversion with other settings or inputs ({', '.join(changed)} "
                'differ); pass --reprocess to redo it, or choose another folder'
            )
        if storage.exists(done_url):
            return True
    storage.write_text(args_url, json.dumps(fingerprint, indent=1, sort_keys=True))
    return False


# Per-process state for group workers: shared counters the parent polls for the progress bar.
_counters: tuple | None = None
_on_report: Callable[[], None] = lambda: None


def _init_worker(counters: tuple) -> None:
    global _counters
    _counters = counters


@contextlib.contextmanager
def _single_threaded_tokenizers() -> Iterator[None]:
    """While forking workers: parallelism comes from the processes, one tokenizer thread each (and
    tokenizers does not warn about a fork after its thread pool was used)."""
    previous = os.environ.get('TOKENIZERS_PARALLELISM')
    os.environ['TOKENIZERS_PARALLELISM'] = 'false'
    try:
        yield
    finally:
        if previous is None:
            del os.environ['TOKENIZERS_PARALLELISM']
        else:
            os.environ['TOKENIZERS_PARALLELISM'] = previous


def _convert_group(index: int, files: list[str], out: str, spec: ConvertSpec) -> Stats:
    last = Stats()

    def report(stats: Stats) -> None:
        documents, tokens = _counters
        with documents.get_lock():
            documents.value += stats.documents - last.documents
        with tokens.get_lock():
            tokens.value += stats.tokens - last.tokens
        last.documents, last.tokens = stats.documents, stats.tokens
        _on_report()

    docs = (read_text_file(path) for path in files)
    return write_documents(docs, storage.join(out, group_name(index)), spec, report=report)


def _run_groups(
    todo: list[int], groups: list[list[str]], out: str, spec: ConvertSpec, processes: int, progress: Progress
) -> Iterator[Stats]:
    """Convert the `todo` groups, yielding each one's stats as it completes."""
    global _counters, _on_report
    ctx = multiprocessing.get_context('fork')  # workers inherit the loaded modules: no re-import cost
    counters = (ctx.Value('q', 0), ctx.Value('q', 0))
    refresh = lambda: progress.update(counters[0].value, counters[1].value)
    if processes <= 1 or len(todo) <= 1:
        _counters, _on_report = counters, refresh
        try:
            for i in todo:
                yield _convert_group(i, groups[i], out, spec)
        finally:
            _on_report = lambda: None
        return
    with _single_threaded_tokenizers(), ProcessPoolExecutor(min(processes, len(todo)), ctx, _init_worker,
                                                            (counters,)) as pool:
        pending = {pool.submit(_convert_group, i, groups[i], out, spec) for i in todo}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                refresh()
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


def _merge_indexes(out: str, n_groups: int) -> None:
    """Merge the groups' index.json files with streaming's merge_index, then publish index.json whole."""
    with tempfile.TemporaryDirectory(prefix='llmfoundry-merge-') as tmp:
        parts = []
        for i in range(n_groups):
            part = os.path.join(tmp, 'parts', group_name(i), INDEX)
            os.makedirs(os.path.dirname(part))
            with open(part, 'w') as f:
                f.write(storage.read_text(storage.join(out, group_name(i), INDEX)))
            parts.append(part)
        merged_dir = os.path.join(tmp, 'merged')
        os.makedirs(merged_dir)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # merge_index warns on the root logger about its temp folder
        try:
            merge_index(parts, merged_dir)
        finally:
            root.setLevel(level)
        with open(os.path.join(merged_dir, INDEX)) as f:
            storage.write_text(storage.join(out, INDEX), f.read())


def _crash_after() -> int | None:
    value = os.environ.get(CRASH_ENV)
    return int(value) if value else None


def convert_text_to_mds(
    input_folder: str, output_folder: str, spec: ConvertSpec, processes: int, reprocess: bool = False
) -> tuple[Stats, int]:
    """Run (or resume) the conversion; returns (stats of the work done now, number of groups skipped)."""
    if os.path.isfile(input_folder):
        raise DataError(f"--input_folder '{input_folder}' is a file, not a folder")
    files = [str(p) for p in list_files(input_folder, (TEXT_SUFFIX,))]
    if not files:
        raise DataError(f"--input_folder '{input_folder}' holds no {TEXT_SUFFIX} files")
    storage.check_writable(output_folder)
    groups = plan_groups(files, processes)
    if _prepare_output(output_folder, _fingerprint(input_folder, files, spec, len(groups)), reprocess):
        return Stats(), len(groups)
    todo = [
        i for i in range(len(groups))
        if reprocess or not storage.exists(storage.join(output_folder, group_name(i), INDEX))
    ]  # fmt: skip
    for i in todo:  # half-written debris of an interrupted run (local staging is cleared by storage.atomic_folder)
        storage.remove(storage.join(output_folder, group_name(i)))

    stats, crash_after, completed = Stats(), _crash_after(), 0
    progress = Progress('convert_text_to_mds', total_documents=sum(len(groups[i]) for i in todo))
    try:
        for group_stats in _run_groups(todo, groups, output_folder, spec, processes, progress):
            stats.add(group_stats)
            completed += 1
            if crash_after is not None and completed >= crash_after:
                os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        progress.close()
    _merge_indexes(output_folder, len(groups))
    stats.seconds = progress.elapsed()
    storage.write_text(storage.join(output_folder, DONE_MARKER), json.dumps(asdict(stats)))
    return stats, len(groups) - len(todo)
