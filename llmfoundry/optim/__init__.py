"""Optimizers and LR schedules configured by a YAML's `optimizer:` and `scheduler:` sections."""

from llmfoundry.optim.optimizers import OPTIMIZERS, DecoupledAdamW, DecoupledLionW, build_optimizer
from llmfoundry.optim.schedulers import SCHEDULERS, Scheduler, apply_lr, build_scheduler

__all__ = [
    'OPTIMIZERS', 'SCHEDULERS', 'DecoupledAdamW', 'DecoupledLionW', 'Scheduler', 'apply_lr', 'build_optimizer',
    'build_scheduler',
]
