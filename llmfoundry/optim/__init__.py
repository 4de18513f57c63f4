"""Optimizers and LR schedules configured by a YAML's `optimizer:` and `scheduler:` sections."""

from llmfoundry.optim.optimizers import DecoupledAdamW, DecoupledLionW, build_optimizer
from llmfoundry.optim.schedulers import Scheduler, apply_lr, build_scheduler

__all__ = ['DecoupledAdamW', 'DecoupledLionW', 'Scheduler', 'apply_lr', 'build_optimizer', 'build_scheduler']
