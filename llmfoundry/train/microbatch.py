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

The optimizer step (which has no collective) is agreed the same way, once per step. An out-of-memory error
there, typically the first step allocating the optimizer's state, is retried like one in a microbatch only in
that first step and only if no rank's step wrote a parameter yet (the state it allocated is dropped), so the
retry is exact.
Otherwise the ranks hold half-updated or diverging weights: every rank stops with a ConfigError saying what to
change, instead of one rank waiting for another or training on.

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
from torch.distributed.tensor import DTensor
from torch.optim import Optimizer

from llmfoundry.config.validation import ConfigError

log = logging.getLogger(__name__)

SIMULATE_ENV = 'LLMFOUNDRY_OOM_ABOVE_MICROBATCH'


class MicrobatchOutOfMemory(Exception):
    """Some rank ran out of memory in this microbatch: every rank halves the microbatch and retries the batch."""


def ranks_with(flags: list[bool], device: torch.device) -> list[int]:
    """For each flag, on how many ranks it is set (this rank's flags without a process group); one all-reduce."""
    votes = torch.tensor([float(flag) for flag in flags], device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(votes, op=dist.ReduceOp.SUM)
    return [int(vote) for vote in votes.tolist()]


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
    if ranks_with([failed], device)[0]:
        raise MicrobatchOutOfMemory


def _local_norms(optimizer: Optimizer) -> list[torch.Tensor]:
    """The norm of this rank's part of every parameter, a fingerprint of whether a failed step wrote any. (Version
    counters would be free, but an in-place foreach op on a DTensor, as optimizers do under FSDP2, bumps none.)"""
    params = [p for group in optimizer.param_groups for p in group['params']]
    params = [p.to_local() if isinstance(p, DTensor) else p for p in params]
    with torch.no_grad():
        return list(torch._foreach_norm(params))


@contextlib.contextmanager
def agreed_optimizer_step(auto: bool, optimizer: Optimizer, device: torch.device, batch: int) -> Iterator[None]:
    """Under auto, the body (the optimizer step of batch `batch`) running out of memory on any rank raises
    MicrobatchOutOfMemory on every rank if it is retryable, otherwise the same ConfigError on every rank; without
    auto a no-op (no collective). Retryable: the optimizer's first step (no state yet: that step allocates it, the
    usual point of failure) failing on every rank before writing any parameter. A failure at a later step counts as
    written: proving otherwise would cost a read of the weights at every step."""
    if not auto:
        yield
        return
    before = None if any(optimizer.state.values()) else _local_norms(optimizer)
    failed = False
    try:
        yield
    except torch.OutOfMemoryError:
        failed = True
    written = not failed or before is None or not all(map(torch.equal, before, _local_norms(optimizer)))
    failed_ranks, written_ranks = ranks_with([failed, written], device)
    if not failed_ranks:
        return
    if written_ranks:
        raise ConfigError(
            f'batch {batch}: the optimizer step ran out of memory on {failed_ranks} rank(s); it cannot be retried '
            f'exactly, as it may have updated weights or optimizer state on {written_ranks} rank(s). Leave memory '
            'for the optimizer state: fsdp_config.cpu_offload: true, more ranks, a lighter optimizer '
            '(decoupled_lionw keeps one state tensor per parameter, adamw two) or a smaller fixed '
            'device_train_microbatch_size.')
    optimizer.state.clear()  # what the failed first step allocated: the retry is a first step again
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
