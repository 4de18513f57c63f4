"""`llmfoundry eval YAML [key=value ...] [--nproc N]`: evaluates in this process, or launches N ranks on this
machine with the same launcher as `llmfoundry train`."""

from __future__ import annotations

import argparse


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog='llmfoundry eval',
                                     description="Evaluate models on ICL tasks and the eval gauntlet from an "
                                                 "llm-foundry eval YAML; writes runs/{run_name}.")
    parser.add_argument('yaml')
    parser.add_argument('overrides', nargs='*', help='key.subkey=value overrides')
    parser.add_argument('--nproc', type=int, default=None, help='ranks to start on this machine')
    args = parser.parse_intermixed_args(argv)
    if not args.nproc:
        from .entry import main as eval_main

        return eval_main([args.yaml, *args.overrides])
    from llmfoundry.train.cli import launch

    # evaluation saves nothing on a signal: a short grace is enough for the ranks to exit
    return launch(args.nproc, [args.yaml, *args.overrides], grace_s=10.0, module='llmfoundry.eval.entry')
