"""device_train_microbatch_size: auto, as Composer does it: the run starts with the whole device batch as one
microbatch, and every training step is the probe. A microbatch that runs out of memory on any rank makes every
rank halve the microbatch size and retry the batch from its start (the gradients of the failed attempt are
discarded), so a step that completes is the same step a run with the final size fixed from the start takes.
The first step probes under the run's precision and with its real forward, backward and gradient
reduction; the optimizer's state, allocated by the first optimizer step, is in memory from the second step
on, and an out-of-memory error there (or at any later step) halves the size again.

The ranks agree after every microbatch (one all-reduce of a flag, only under auto): a rank that ran out of
memory and one that did not both retry, instead of one retrying while the other waits in the next
microbatch's collectives. An error inside a sharded forward or backward can still leave the other ranks in
that pass's all-gather; agreement covers errors that end a rank's microbatch, which on CUDA is where the
caching allocator's peak (the backward's activations and gradients) usually is.

LLMFOUNDRY_OOM_ABOVE_MICROBATCH=r:n[:k] (tests): rank r raises torch.OutOfMemoryError after the backward of any
microbatch of more than n rows, from batch k (default 1) on.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

SIMULATE_ENV = 'LLMFOUNDRY_OOM_ABOVE_MICROBATCH'


class MicrobatchOutOfMemory(Exception):
    """Some rank ran out of memory in this microbatch: every rank halves the microbatch and retries the batch."""


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether `flag` is set on any rank (this rank's flag without a process group)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return flag
    votes = torch.tensor([float(flag)], device=device)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return bool(votes.item())


def simulate_out_of_memory(rank: int, batch: int, rows: int) -> None:
    """The test hook of SIMULATE_ENV (see the module doc); `batch` counts from 1."""
    setting = os.environ.get(SIMULATE_ENV)
    if not setting:
        return
    oom_rank, limit, first_batch = (list(map(int, setting.split(':'))) + [1])[:3]
    if rank == oom_rank and batch >= first_batch and rows > limit:
        raise torch.OutOfMemoryError(f'{SIMULATE_ENV}={setting}: simulated out of memory at {rows} rows')


@contextlib.contextmanager
def agreed_out_of_memory(auto: bool, device: torch.device) -> Iterator[None]:
    """Under auto, turn an out-of-memory error in the body on any rank into MicrobatchOutOfMemory on every rank;
    otherwise a no-op (no collective)."""
    if not auto:
        yield
        return
    failed = False
    try:
        yield
    except torch.OutOfMemoryError:
        failed = True
    if any_rank(failed, device):
        raise MicrobatchOutOfMemory


def halved(size: int, batch: int) -> int:
    """The next microbatch size to try after running out of memory at `size` in batch `batch`."""
    if size == 1:
        raise torch.OutOfMemoryError(f'device_train_microbatch_size: auto: batch {batch} runs out of memory on some '
                                     'rank even with a microbatch of 1 row; use a smaller model, max_seq_len or '
                                     'more ranks (FSDP).')
    log.warning('device_train_microbatch_size: auto: batch %d ran out of memory on some rank with microbatch %d; '
                'retrying it with %d', batch, size, size // 2)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return size // 2
