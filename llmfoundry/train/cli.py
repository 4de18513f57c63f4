"""`llmfoundry train YAML [overrides] [--nproc N]`: runs in-process, or launches N ranks with torchrun."""

from __future__ import annotations

import argparse
import subprocess
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog='llmfoundry train', description='Train from an llm-foundry style YAML.')
    parser.add_argument('yaml')
    parser.add_argument('overrides', nargs='*', help='key.subkey=value overrides')
    parser.add_argument('--nproc', type=int, default=None, help='processes on this node (spawns torchrun)')
    args = parser.parse_intermixed_args(argv)
    if not args.nproc:
        from .entry import main as train_main

        return train_main([args.yaml, *args.overrides])
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={args.nproc}',
               '-m', 'llmfoundry.train.entry', args.yaml, *args.overrides]
    return subprocess.call(command)
