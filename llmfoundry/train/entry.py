"""`python scripts/train/train.py YAML [key=value ...]`, also under torchrun or Composer's launcher."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from llmfoundry.config.loading import load_train_config
from llmfoundry.config.validation import ConfigError

from .distributed import init_distributed, shutdown
from .setup import build_trainer
from .trainer import CollectiveTimeout


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='train.py', description='Train a model from an llm-foundry style YAML.')
    parser.add_argument('yaml', help='training config (llm-foundry keys)')
    parser.add_argument('overrides', nargs='*', help='key.subkey=value overrides, e.g. max_duration=10ba')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config, resolved = load_train_config(args.yaml, args.overrides)
    except ConfigError as error:
        print(f'Config error: {error}', file=sys.stderr)
        return 2
    level = (config.python_log_level or 'info').upper()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    logging.getLogger('llmfoundry').setLevel(level)
    info = init_distributed(config.dist_timeout)
    try:
        trainer = build_trainer(config, resolved, info)
        trainer.fit()
    except ConfigError as error:
        print(f'Config error (rank {info.rank}): {error}', file=sys.stderr)
        shutdown()
        return 2
    except CollectiveTimeout as error:
        print(f'Hung collective: {error}', file=sys.stderr, flush=True)
        os._exit(3)  # tearing the process group down would wait on the stuck rank as well
    shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
