"""`python scripts/train/train.py YAML [key=value ...] [--dry-run]`, also under torchrun or Composer's launcher."""

from __future__ import annotations

import argparse
import os
import sys

from llmfoundry.config.loading import load_train_config
from llmfoundry.config.validation import ConfigError

from .distributed import init_distributed, shutdown
from .dry_run import dry_run
from .logs import configure_logging
from .setup import build_trainer
from .trainer import CollectiveTimeout, RunDiverged

CONFIG_ERROR_EXIT = 2
DIVERGED_EXIT = 4  # nan_monitor / loss_spike stopped the run; 3 is a hung collective


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='train.py', description='Train a model from an llm-foundry style YAML.')
    parser.add_argument('yaml', help='training config (llm-foundry keys)')
    parser.add_argument('overrides', nargs='*', help='key.subkey=value overrides, e.g. max_duration=10ba')
    parser.add_argument('--dry-run', action='store_true',
                        help='check the config, paths, tokenizer, model (on the meta device), layout and first batch; '
                             'then exit without training or writing anything')
    return parser.parse_intermixed_args(argv)


def report_config_error(error: ConfigError, rank: int) -> int:
    """Print a config error once: it is the same on every rank (checks that could differ by rank are agreed
    across ranks before they raise, see distributed.agree_on_errors), so rank 0 speaks for all."""
    if rank == 0:
        print(f'Config error: {error}', file=sys.stderr, flush=True)
    return CONFIG_ERROR_EXIT


def launcher_rank() -> int:
    return int(os.environ.get('RANK', 0))


def dry_run_main(yaml: str, overrides: list[str], world_size: int | None = None) -> int:
    """--dry-run: the layout is for `world_size` ranks (default: WORLD_SIZE, else 1). Under a launcher only
    rank 0 reports; the others exit at once."""
    if launcher_rank() != 0:
        return 0
    world_size = world_size or int(os.environ.get('WORLD_SIZE', 1))
    try:
        config, _ = load_train_config(yaml, overrides)
        configure_logging(config.python_log_level, 0, 1)
        dry_run(config, world_size)
    except ConfigError as error:
        return report_config_error(error, 0)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.dry_run:
        return dry_run_main(args.yaml, args.overrides)
    try:
        config, resolved = load_train_config(args.yaml, args.overrides)
    except ConfigError as error:
        return report_config_error(error, launcher_rank())
    info = init_distributed(config.dist_timeout)
    configure_logging(config.python_log_level, info.rank, info.world_size)
    try:
        trainer = build_trainer(config, resolved, info)
        trainer.fit()
    except ConfigError as error:
        shutdown()
        return report_config_error(error, info.rank)
    except RunDiverged as error:  # every rank sees the same (reduced) loss, so all of them end here
        if info.rank == 0:
            print(f'Diverged: {error}', file=sys.stderr, flush=True)
        shutdown()
        return DIVERGED_EXIT
    except CollectiveTimeout as error:
        print(f'Hung collective: {error}', file=sys.stderr, flush=True)
        os._exit(3)  # tearing the process group down would wait on the stuck rank as well
    shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
