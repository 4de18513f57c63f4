"""`llmfoundry train YAML [overrides] [--nproc N] [--dry-run]`: runs in-process, or launches N ranks on this machine.

--dry-run checks everything in this one process and prints the layout the run would have on N ranks.

With --nproc the ranks are started directly with the variables torchrun and Composer's launcher set (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR, MASTER_PORT). A SIGTERM or SIGINT to this
command is forwarded to every rank, which then finishes its batch, saves a checkpoint and exits 0; unlike
torchrun (which exits non-zero after a signal and SIGKILLs its workers 30 s later) we wait --grace seconds and
exit 0 when every rank did. If one rank fails, the others are stopped and its exit code is returned. Each rank sizes
its own CPU thread pools from LOCAL_WORLD_SIZE (train/distributed.py: configure_threads; OMP_NUM_THREADS overrides).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _start_ranks(nproc: int, argv: list[str], module: str) -> list[subprocess.Popen]:
    port = str(_free_port())
    processes = []
    for rank in range(nproc):
        env = {**os.environ, 'RANK': str(rank), 'WORLD_SIZE': str(nproc), 'LOCAL_RANK': str(rank),
               'LOCAL_WORLD_SIZE': str(nproc), 'NODE_RANK': '0', 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': port}
        processes.append(subprocess.Popen([sys.executable, '-m', module, *argv], env=env))
    return processes


def launch(nproc: int, argv: list[str], grace_s: float, module: str = 'llmfoundry.train.entry') -> int:
    """Run `nproc` ranks of `module` (the trainer; `llmfoundry eval` passes its own entry); forward SIGTERM/SIGINT;
    return 0 only when every rank exits 0."""
    processes = _start_ranks(nproc, argv, module)
    deadline: list[float] = []

    def forward(signum: int, frame) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline[:] = [time.monotonic() + grace_s]

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while any(p.poll() is None for p in processes):
            failed = [p.returncode for p in processes if p.returncode not in (None, 0)]
            if failed and not deadline:  # one rank died: the others would wait in a collective until timeout
                forward(signal.SIGTERM, None)
            if deadline and time.monotonic() > deadline[0]:
                for process in processes:
                    process.kill()
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [p.returncode for p in processes]
    return next((code for code in codes if code != 0), 0)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog='llmfoundry train', description='Train from an llm-foundry style YAML.')
    parser.add_argument('yaml')
    parser.add_argument('overrides', nargs='*', help='key.subkey=value overrides')
    parser.add_argument('--nproc', type=int, default=None, help='ranks to start on this machine')
    parser.add_argument('--grace', type=float, default=600.0,
                        help='seconds the ranks get to save and exit after a forwarded signal (default 600)')
    parser.add_argument('--dry-run', action='store_true',
                        help='check config, paths, tokenizer, model (meta device), layout on N ranks and the first '
                             'batch in this process, then exit without training or writing anything')
    args = parser.parse_intermixed_args(argv)
    if args.dry_run:
        from .entry import dry_run_main

        return dry_run_main(args.yaml, args.overrides, args.nproc)
    if not args.nproc:
        from .entry import main as train_main

        return train_main([args.yaml, *args.overrides])
    return launch(args.nproc, [args.yaml, *args.overrides], args.grace)
