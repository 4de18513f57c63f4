"""Run a conversion's groups on this machine: one forked process per group, at most `processes` at once."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from llmfoundry.data.prep.groups import GroupJob, convert_group
from llmfoundry.data.prep.progress import Progress, Stats

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


def _run_one(job: GroupJob, index: int) -> Stats:
    last = Stats()

    def report(stats: Stats) -> None:
        documents, tokens = _counters
        with documents.get_lock():
            documents.value += stats.documents - last.documents
        with tokens.get_lock():
            tokens.value += stats.tokens - last.tokens
        last.documents, last.tokens = stats.documents, stats.tokens
        _on_report()

    return convert_group(job, index, report)


class LocalExecutor:
    """Groups in a pool of `processes` forked processes (or in this process when there is one)."""

    def __init__(self, processes: int) -> None:
        self.processes = processes

    def run(self, job: GroupJob, todo: list[int], progress: Progress) -> Iterator[Stats]:
        global _counters, _on_report
        ctx = multiprocessing.get_context('fork')  # workers inherit the loaded modules: no re-import cost
        counters = (ctx.Value('q', 0), ctx.Value('q', 0))
        done = 0
        refresh = lambda: progress.update(counters[0].value, counters[1].value, done)
        if self.processes <= 1 or len(todo) <= 1:
            _counters, _on_report = counters, refresh
            try:
                for i in todo:
                    stats = _run_one(job, i)
                    done += 1
                    yield stats
            finally:
                _on_report = lambda: None
            return
        workers = min(self.processes, len(todo))
        with _single_threaded_tokenizers(), ProcessPoolExecutor(workers, ctx, _init_worker, (counters,)) as pool:
            pending = {pool.submit(_run_one, job, i) for i in todo}
            try:
                while pending:
                    finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    done += len(finished)
                    refresh()
                    for future in finished:
                        yield future.result()
            finally:
                for future in pending:
                    future.cancel()
