"""Run a test function on several gloo ranks (spawned processes) with a deadline, for multi-process tests.

    run_ranks(my_module_level_fn, 2, arg1, arg2)   # calls my_module_level_fn(rank, world_size, arg1, arg2)

Each rank gets the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and a
joined gloo process group with a short timeout, so a hung collective fails the test instead of CI.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from collections.abc import Callable

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _rank_entry(rank: int, fn: Callable, world_size: int, port: int, args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        fn(rank, world_size, *args)
        dist.barrier()  # no rank tears the group down while another still talks to it (gloo aborts then)
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable, world_size: int, *args, timeout: float = 120) -> None:
    """Run fn(rank, world_size, *args) on `world_size` ranks; fail the test if they do not all end in time."""
    context = mp.start_processes(_rank_entry, args=(fn, world_size, free_port(), args), nprocs=world_size,
                                 join=False, start_method='spawn')
    deadline = time.monotonic() + timeout
    # join() returns False while any rank is still running (it returns after each rank that ends)
    while not context.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f'{world_size} gloo ranks did not finish within {timeout:.0f} s')


def collect_from_ranks(fn: Callable, world_size: int, *args, timeout: float = 120) -> dict:
    """run_ranks with a shared dict as fn's last argument, fn(rank, world_size, *args, results); what the ranks
    stored in it."""
    with mp.Manager() as manager:
        results = manager.dict()
        run_ranks(fn, world_size, *args, results, timeout=timeout)
        return dict(results)
