"""Logger destinations a YAML's `loggers:` section adds (wandb, tensorboard, mlflow). Each is registered by name in
llmfoundry/registry.py; the trainer builds it with `loggers.build(name, kwargs, f'loggers.{name}', run_folder=...,
default_name=run_name)`. The console and the metrics.jsonl file every run writes are the trainer's own
(llmfoundry/train/console.py, llmfoundry/train/jsonl.py).
"""

from .mlflow_logger import MLFlowLogger
from .tensorboard_logger import TensorBoardLogger
from .wandb_logger import WandBLogger

__all__ = ['MLFlowLogger', 'TensorBoardLogger', 'WandBLogger']
