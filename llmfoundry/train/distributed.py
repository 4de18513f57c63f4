"""Process-group setup from the launcher's environment (torchrun, Composer's launcher, SLURM wrappers).

Every launcher we support sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; a plain
`python train.py` sets none of them and runs as a single process without a process group.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from llmfoundry.config.validation import ConfigError
from llmfoundry.interfaces import DistInfo

from .host_memory import keep_freed_memory

T = TypeVar('T')


def threads_per_rank(local_world_size: int, cpus: int | None = None) -> int:
    """CPU threads for each of `local_world_size` ranks on this machine: OMP_NUM_THREADS when set, else the CPUs
    this process may use (`cpus`, default its affinity) shared out evenly, at least one."""
    value = os.environ.get('OMP_NUM_THREADS')
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f'OMP_NUM_THREADS={value!r} is invalid: set it to a positive number of threads per rank '
                              '(or unset it: the CPUs are then shared out evenly between the ranks of a machine).')
        return int(value)
    cpus = len(os.sched_getaffinity(0)) if cpus is None else cpus
    return max(1, cpus // local_world_size)


def configure_threads(local_world_size: int) -> None:
    """Size this rank's intra-op and inter-op thread pools (`threads_per_rank`) when several ranks share the
    machine, whatever launched them: torch's default of one thread per core in every rank oversubscribes the cores
    (on 2 cores, 2 ranks x 2 threads spend their time waiting for each other). Exported as OMP_NUM_THREADS for this
    process's children (data-loader workers). One rank alone keeps torch's defaults."""
    if local_world_size <= 1:
        return
    threads = threads_per_rank(local_world_size)
    os.environ['OMP_NUM_THREADS'] = str(threads)
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already sized or started (a second run in one process)
        torch.set_num_interop_threads(threads)


def init_distributed(timeout_s: float, device: str | None = None) -> DistInfo:
    """Join the process group the launcher described (gloo on CPU, nccl on CUDA); one process needs none. Several
    ranks on one machine share its CPUs (`configure_threads`); on the CPU freed memory stays in the process
    (host_memory.py)."""
    rank = int(os.environ.get('RANK', 0))
    world_size = int(os.environ.get('WORLD_SIZE', 1))
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    configure_threads(int(os.environ.get('LOCAL_WORLD_SIZE', world_size)))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith('cuda')
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device('cuda', local_rank)
    else:
        target = torch.device('cpu')
        keep_freed_memory()
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend='nccl' if use_cuda else 'gloo', timeout=datetime.timedelta(seconds=timeout_s),
            device_id=target if use_cuda else None,
        )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=target)


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place); a no-op without a process group."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def agree_on_errors(check: Callable[[], T], info: DistInfo) -> T:
    """Run `check` on every rank; when it raises a ConfigError on any rank, every rank raises the same one.

    For checks whose outcome can differ by rank (files on a node's disk): no rank goes on to a collective that
    a failed rank never joins, and rank 0 can report every rank's problem (naming the ranks unless all agree).
    Any other exception is re-raised on its own rank (after the others learned of it, as a ConfigError).
    """
    result, message, unexpected = None, None, None
    try:
        result = check()
    except ConfigError as error:
        message = str(error)
    except Exception as error:  # noqa: BLE001 - reported to the other ranks, then re-raised here with its traceback
        message, unexpected = f'{type(error).__name__}: {error}', error
    messages: list[str | None] = [message]
    if info.world_size > 1 and dist.is_initialized():
        messages = [None] * info.world_size
        dist.all_gather_object(messages, message)
    if unexpected is not None:
        raise unexpected
    failed: dict[str, list[int]] = {}
    for rank, text in enumerate(messages):
        if text is not None:
            failed.setdefault(text, []).append(rank)
    if not failed:
        return result
    if len(failed) == 1 and len(next(iter(failed.values()))) == len(messages):
        raise ConfigError(next(iter(failed)))
    raise ConfigError('; '.join(f"{text} (rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))})"
                                for text, ranks in failed.items()))


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
