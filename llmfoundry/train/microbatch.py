"""device_train_microbatch_size: auto, as Composer does it: the run starts with the whole device batch as one
microbatch, and every training step is the probe. A microbatch that runs out of memory on any rank makes every
rank halve the microbatch size and retry the batch from its start (the gradients of the failed attempt are
discarded), so a step that completes is the same step a run with the final size fixed from the start takes.
The first step probes under the run's precision and with its real forward, backward and gradient
reduction; the optimizer's state, allocated by the first optimizer step, is in memory from the second step
on, and an out-of-memory error there (or at any later step) halves the size again.

The ranks agree on every microbatch (OutOfMemoryAgreement, only under auto): a rank that ran out of memory and one
that did not both retry, instead of one retrying while the other waits in a collective the failed rank never joins.
The agreement is one all-reduce of a flag ("some rank ran out of memory") at the end of each microbatch and, under
FSDP2, at every point where a sharded pass issues a collective: before each unit's (each block's and the root's)
forward, before its backward and before its post-backward gradient reduction, plus once before the root's final
reduction (FSDP's end-of-backward callback). The protocol:
- a rank whose microbatch raises torch.OutOfMemoryError makes exactly one more flag all-reduce, with its flag set;
- a rank that did not fail sets no flag, and raises MicrobatchOutOfMemory at the first all-reduce that sees one.
Every flag all-reduce is a global sync point, so all ranks are always between the same two of them; between two,
each FSDP collective a healthy rank issues is one the failed rank issued before its error (a unit's all-gather
directly follows the check before its forward or backward, its reduce-scatter the check before its
post-backward). The failed rank's one all-reduce therefore meets the healthy ranks' next one, and no rank is left
in an all-gather or reduce-scatter. FSDP's prefetching would break that (a unit's hook issues the next unit's
all-gather after allocating its own parameters, which can be the allocation that fails), so while the checks are
on, forward prefetch (fsdp_config.forward_prefetch) and FSDP2's default backward prefetch are off.
Not covered: an error while FSDP allocates a collective's own buffer (one unit's all-gather output or
reduce-scatter input) precedes that collective on the failed rank only; the others then wait until dist_timeout
(CollectiveTimeout names the batch), as every rank did before this agreement existed.
After an agreed failure FSDP's per-pass state is reset (FSDPModule.reset_iter_state, and the gradients FSDP
accumulates unsharded between reductions are dropped), so the retry starts from a clean pass.
Cost, only under auto with FSDP: 3 one-element all-reduces per unit per microbatch, 3 more for the root and 1 at
the end, each a host-device sync on CUDA, and backward all-gathers that no longer overlap the previous unit's
compute. The checks stay on for the whole run: turning them off once the size is stable would let a later
out-of-memory error (another sequence length, fragmentation) hang the run again.

The optimizer step (which has no collective) is agreed the same way, once per step. An out-of-memory error
there, typically the first step allocating the optimizer's state, is retried like one in a microbatch only in
that first step and only if no rank's step wrote a parameter yet (the state it allocated is dropped), so the
retry is exact.
Otherwise the ranks hold half-updated or diverging weights: every rank stops with a ConfigError saying what to
change, instead of one rank waiting for another or training on.

LLMFOUNDRY_OOM_ABOVE_MICROBATCH=r:n[:k] (tests): rank r raises torch.OutOfMemoryError after the backward of any
microbatch of more than n rows, from batch k (default 1) on; with LLMFOUNDRY_OOM_INSIDE=name:forward (or
name:backward) it raises inside the forward (backward) of the submodule `name` (e.g. transformer.blocks.1)
instead, under FSDP with auto.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.autograd.variable import Variable
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from torch.optim import Optimizer
from torch.utils._pytree import tree_flatten, tree_unflatten

from llmfoundry.config.validation import ConfigError

log = logging.getLogger(__name__)

SIMULATE_ENV = 'LLMFOUNDRY_OOM_ABOVE_MICROBATCH'
INSIDE_ENV = 'LLMFOUNDRY_OOM_INSIDE'


class MicrobatchOutOfMemory(Exception):
    """Some rank ran out of memory in this microbatch: every rank halves the microbatch and retries the batch."""


def ranks_with(flags: list[bool], device: torch.device) -> list[int]:
    """For each flag, on how many ranks it is set (this rank's flags without a process group); one all-reduce."""
    votes = torch.tensor([float(flag) for flag in flags], device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(votes, op=dist.ReduceOp.SUM)
    return [int(vote) for vote in votes.tolist()]


def simulate_out_of_memory(rank: int, batch: int, rows: int, where: str | None = None) -> None:
    """The test hook of SIMULATE_ENV (see the module doc); `batch` counts from 1, `where` is None after the
    backward or INSIDE_ENV's value ('transformer.blocks.1:forward') inside a module."""
    setting = os.environ.get(SIMULATE_ENV)
    if not setting or os.environ.get(INSIDE_ENV) != where:
        return
    oom_rank, limit, first_batch = (list(map(int, setting.split(':'))) + [1])[:3]
    if rank == oom_rank and batch >= first_batch and rows > limit:
        raise torch.OutOfMemoryError(f'{SIMULATE_ENV}={setting}: simulated out of memory at {rows} rows')


class _CheckInBackward(torch.autograd.Function):
    """Identity on `tensors`; runs `check` when their gradients arrive, before any hook on the inputs' producers."""

    @staticmethod
    def forward(ctx: Any, check: Callable[[], None], *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.check = check
        return tuple(tensor.view_as(tensor) for tensor in tensors)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        ctx.check()
        return (None, *grads)


def _check_in_backward(check: Callable[[], None], tree: Any) -> Any:
    """`tree` (outputs, or (args, kwargs)) with its tensors that require grad passed through one _CheckInBackward."""
    leaves, spec = tree_flatten(tree)
    slots = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor) and leaf.requires_grad]
    if not slots or not torch.is_grad_enabled():
        return tree
    for slot, checked in zip(slots, _CheckInBackward.apply(check, *(leaves[i] for i in slots))):
        leaves[slot] = checked
    return tree_unflatten(leaves, spec)


def _drop_unreduced_gradients(unit: FSDPModule) -> None:
    """The gradients FSDP2 keeps unsharded between reductions (microbatches without gradient sync): reset_iter_state
    keeps them, and the optimizer's zero_grad cannot reach them (FSDP2 has no public API for this)."""
    for group in unit._get_fsdp_state()._fsdp_param_groups:
        for param in group.fsdp_params:
            param.unsharded_accumulated_grad = None
            if hasattr(param, '_unsharded_param'):
                param._unsharded_param.grad = None


class OutOfMemoryAgreement:
    """Under auto, every rank learns in the same collective that some rank ran out of memory in the current
    microbatch (see the module doc); without auto, no collective and no hook."""

    def __init__(self, auto: bool, module: nn.Module, rank: int, device: torch.device) -> None:
        self.auto, self.module, self.rank, self.device = auto, module, rank, device
        self.batch: int | None = None  # the batch (from 1) whose microbatch runs now; None: the hooks do nothing
        self.units = [unit for unit in module.modules() if isinstance(unit, FSDPModule)] if auto else []
        if self.units and not hasattr(module, 'reset_iter_state'):
            log.warning('device_train_microbatch_size: auto: this torch has no FSDPModule.reset_iter_state, so an '
                        'out-of-memory error inside a sharded pass is agreed only after it (it may hang).')
            self.units = []
        for unit in self.units:
            self._watch(unit)
        if self.units and os.environ.get(INSIDE_ENV):
            self._simulate_inside(os.environ[INSIDE_ENV])

    @contextlib.contextmanager
    def microbatch(self, batch: int) -> Iterator[None]:
        """Run one microbatch of batch `batch`; an out-of-memory error in it on any rank raises MicrobatchOutOfMemory
        on every rank (the failed rank after its one flagged all-reduce)."""
        if not self.auto:
            yield
            return
        self.batch, failed = batch, False
        try:
            yield
        except torch.OutOfMemoryError:
            failed = True
        except MicrobatchOutOfMemory:  # a check saw another rank's flag: that was this rank's last all-reduce
            self._reset()
            raise
        finally:
            self.batch = None
        if self._any_failed(failed):
            self._reset()
            raise MicrobatchOutOfMemory

    def _any_failed(self, failed: bool) -> bool:
        return ranks_with([failed], self.device)[0] > 0

    def _check(self, *_: Any) -> None:
        """A healthy rank's flag all-reduce inside a pass; raises when another rank set its flag."""
        if self.batch is not None and self._any_failed(False):
            raise MicrobatchOutOfMemory

    def _watch(self, unit: FSDPModule) -> None:
        """The checks of one FSDP unit, each registered to run before the FSDP hook that issues a collective."""
        eager = torch.compiler.disable  # a compiled block's hooks would be traced: these stay eager, as FSDP's do
        # before FSDP's pre-forward (its all-gather), which fully_shard registered with prepend=True too
        unit.register_forward_pre_hook(eager(self._check), prepend=True)
        # after FSDP's pre-forward, so in backward this runs before FSDP's post-backward (its reduce-scatter)
        unit.register_forward_pre_hook(eager(self._wrap_inputs), with_kwargs=True)
        # after FSDP's post-forward hooked the outputs, so in backward this runs before its pre-backward all-gather
        unit.register_forward_hook(eager(self._wrap_root_outputs if unit is self.module else self._wrap_outputs))
        unit.set_modules_to_forward_prefetch([])
        unit.set_modules_to_backward_prefetch([unit])  # itself, already gathered: no prefetch (module doc)

    def _wrap_inputs(self, unit: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        return None if self.batch is None else _check_in_backward(self._check, (args, kwargs))

    def _wrap_outputs(self, unit: nn.Module, args: tuple, output: Any) -> Any:
        return None if self.batch is None else _check_in_backward(self._check, output)

    def _wrap_root_outputs(self, unit: nn.Module, args: tuple, output: Any) -> Any:
        """The root's inputs need no gradient, so FSDP reduces its gradients in a callback at the end of backward,
        queued at backward's start: this one, queued first, runs before it."""
        def check_and_queue() -> None:
            self._check()
            Variable._execution_engine.queue_callback(self._check)
        return None if self.batch is None else _check_in_backward(check_and_queue, output)

    def _reset(self) -> None:
        """FSDP's state after an aborted pass, so the retry starts clean (module doc)."""
        if not self.units:
            return
        self.module.reset_iter_state()
        for unit in self.units:
            _drop_unreduced_gradients(unit)

    def _simulate_inside(self, where: str) -> None:
        """INSIDE_ENV (tests): SIMULATE_ENV's error raised inside a module's forward (after FSDP gathered its
        parameters) or at the start of its backward (after FSDP's pre-backward gathered them again)."""
        name, phase = where.split(':')
        module = self.module.get_submodule(name)

        def fail(tensors: Any) -> Callable[[], None]:
            batch, rows = self.batch, next(t for t in tree_flatten(tensors)[0] if isinstance(t, torch.Tensor)).shape[0]
            return lambda: simulate_out_of_memory(self.rank, batch, rows, where)

        def in_forward(module: nn.Module, args: tuple) -> None:
            if self.batch is not None:
                fail(args)()

        def in_backward(module: nn.Module, args: tuple, output: Any) -> Any:
            # prepended: FSDP's post-forward hooks this output, so its pre-backward runs before the failure
            return None if self.batch is None else _check_in_backward(fail(output), output)
        if phase == 'forward':
            module.register_forward_pre_hook(in_forward)
        else:
            module.register_forward_hook(in_backward, prepend=True)


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
