"""Logger destinations. `console` and `jsonl` are built by the trainer itself; importing this package
registers the YAML-configured ones (wandb, tensorboard, mlflow), which the trainer builds with
`loggers.build(name, kwargs, f'loggers.{name}', run_folder=..., default_name=run_name)`.
"""

from .console import ConsoleLogger
from .jsonl import JSONLLogger
from .mlflow_logger import MLFlowLogger
from .tensorboard_logger import TensorBoardLogger
from .wandb_logger import WandBLogger

__all__ = ['ConsoleLogger', 'JSONLLogger', 'MLFlowLogger', 'TensorBoardLogger', 'WandBLogger']
