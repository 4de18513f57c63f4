"""`python scripts/train/train.py YAML [key=value ...] [--dry-run]`, also under torchrun or Composer's launcher."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import torch

from llmfoundry.config.environment import cuda_environment
from llmfoundry.config.loading import load_train_config
from llmfoundry.config.metadata import logged_config
from llmfoundry.config.no_op import warn_no_op_keys
from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.validation import ConfigError

from .distributed import init_distributed, shutdown
from .dry_run import dry_run
from .logs import configure_logging
from .setup import build_trainer
from .trainer import CollectiveTimeout, RunDiverged

log = logging.getLogger(__name__)

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


def apply_cuda_environment(config: TrainConfig, speak: bool = True) -> dict[str, str]:
    """Set the config's CUDA variables (environment.py) in this process; they act only if CUDA is not yet
    initialised, so this runs before the process group (and its device) exists. `speak`: warn (rank 0 only,
    logging is not configured yet). Returns what was set."""
    variables = cuda_environment(config)
    replaced = [f'{name}={os.environ[name]}' for name, value in variables.items()
                if os.environ.get(name, value) != value]
    os.environ.update(variables)
    if speak and replaced:
        log.warning('The config replaces %s from the environment (llm-foundry does the same)', ', '.join(replaced))
    if speak and variables and torch.cuda.is_initialized():  # a second run in one process (tests, notebooks)
        log.warning('CUDA is already initialised in this process: %s take effect in new processes only',
                    ', '.join(variables))
    return variables


def dry_run_main(yaml: str, overrides: list[str], world_size: int | None = None) -> int:
    """--dry-run: the layout is for `world_size` ranks (default: WORLD_SIZE, else 1). Under a launcher only
    rank 0 reports; the others exit at once."""
    if launcher_rank() != 0:
        return 0
    world_size = world_size or int(os.environ.get('WORLD_SIZE', 1))
    try:
        config, resolved = load_train_config(yaml, overrides)
        configure_logging(config.python_log_level, 0, 1)
        logged_config(config, resolved)  # a metadata key that clashes fails here too
        warn_no_op_keys(config)
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
    apply_cuda_environment(config, speak=launcher_rank() == 0)
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
