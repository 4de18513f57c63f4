"""Run a conversion's groups as Ray tasks: on this machine, one big machine or a cluster, the same command.

The only module that imports Ray (an extra: `pip install 'llmfoundry[ray]'`). One task per group, one CPU
each; a task lost with its worker or node (kill, OOM, preemption) is retried elsewhere (`max_retries`), and
each attempt first clears the group's debris (`groups.convert_group`), so the output is the same as an
uninterrupted run's. A DataError in a task (bad input) is not retried: it reaches the user as our own error.

Tasks report their group's running totals to a small actor the driver polls for the one progress bar.
Every node reads the inputs and writes the output itself: use object storage (or a shared filesystem) and a
tokenizer every node can load (a hub name, or a path present on every node).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator

import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from llmfoundry.data.errors import DataError
from llmfoundry.data.prep.groups import GroupJob, convert_group
from llmfoundry.data.prep.progress import Progress, Stats
from llmfoundry.storage import StorageError

MAX_RETRIES = 3  # attempts after a lost worker or node, per group
_POLL_S = 0.5
_CANCEL_WAIT_S = 30.0
# Test hook: a task started where this variable is set (the environment of one node's `ray start`) and the
# file it names does not exist yet creates that file holding its pid, then waits to be killed with its node.
STALL_ENV = 'LLMFOUNDRY_RAY_STALL_FILE'


@ray.remote(num_cpus=0)
class _Totals:
    """Each group's latest (documents, tokens); a retried group overwrites its lost attempt's counts."""

    def __init__(self) -> None:
        self.by_group: dict[int, tuple[int, int]] = {}

    def set(self, index: int, documents: int, tokens: int) -> None:
        self.by_group[index] = (documents, tokens)

    def totals(self) -> tuple[int, int]:
        return sum(d for d, _ in self.by_group.values()), sum(t for _, t in self.by_group.values())


def _stall_for_test() -> None:
    path = os.environ.get(STALL_ENV)
    if not path:
        return
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    while True:
        time.sleep(1)


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _convert(job: GroupJob, index: int, totals: ray.actor.ActorHandle) -> Stats:
    os.environ['TOKENIZERS_PARALLELISM'] = 'false'  # one CPU per task: parallelism comes from the tasks
    _stall_for_test()
    return convert_group(job, index, lambda stats: totals.set.remote(index, stats.documents, stats.tokens))


def connect(address: str | None) -> None:
    """Ray's own rule: `address` (auto, HOST:PORT, ray://...), else RAY_ADDRESS, else the cluster `ray start`
    started on this machine, else a new local one for this job."""
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)


def cluster_cpus(address: str | None) -> int:
    """The cluster's CPUs now: the default number of groups."""
    connect(address)
    return max(1, int(ray.cluster_resources().get('CPU', 1)))


class RayExecutor:
    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def run(self, job: GroupJob, todo: list[int], progress: Progress) -> Iterator[Stats]:
        connect(self.address)
        # On the driver's node: the counts must not die with a worker node.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        totals = _Totals.options(scheduling_strategy=here).remote()
        job_ref = ray.put(job)
        pending = {_convert.remote(job_ref, i, totals): i for i in todo}
        done = 0
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=_POLL_S, fetch_local=False)
                results = []
                for ref in ready:
                    del pending[ref]
                    results.append(_result(ref))
                done += len(ready)
                with contextlib.suppress(RayActorError):  # only the bar's counts are lost with it
                    progress.update(*ray.get(totals.totals.remote()), done)
                yield from results
        finally:
            if pending:  # a group failed (or Ctrl-C): stop the others, letting each discard its partial output
                for ref in pending:
                    ray.cancel(ref)
                ray.wait(list(pending), num_returns=len(pending), timeout=_CANCEL_WAIT_S, fetch_local=False)
            ray.kill(totals)


def _result(ref: ray.ObjectRef) -> Stats:
    try:
        return ray.get(ref)
    except RayTaskError as err:
        if isinstance(err.cause, (DataError, StorageError)):  # bad input or output: our one-line error
            raise type(err.cause)(str(err.cause)) from None
        raise
