"""Faults on demand, so the recovery tests (tests/train/test_train_e2e.py) inject a failure at a chosen batch
instead of timing one:

- LLMFOUNDRY_CRASH_AFTER_BATCH=k: every rank exits abruptly (os._exit) after batch k and its checkpoint;
- LLMFOUNDRY_STALL_AFTER_BATCH=r:k: rank r stops responding after batch k (a hung rank, e.g. a dead GPU);
- LLMFOUNDRY_NAN_AT_BATCH=k: the loss of batch k is NaN on every rank (a divergence: NaN gradients and weights).
"""

from __future__ import annotations

import logging
import os
import time

import torch

log = logging.getLogger(__name__)

CRASH_ENV = 'LLMFOUNDRY_CRASH_AFTER_BATCH'
STALL_ENV = 'LLMFOUNDRY_STALL_AFTER_BATCH'
NAN_ENV = 'LLMFOUNDRY_NAN_AT_BATCH'


def poison_loss(loss: torch.Tensor, batch: int) -> torch.Tensor:
    """`loss` (of the batch numbered `batch`, counting from 1), made NaN when NAN_ENV names that batch."""
    if os.environ.get(NAN_ENV) != str(batch):
        return loss
    return loss * float('nan')


def inject_faults(rank: int, batch: int) -> None:
    if os.environ.get(CRASH_ENV) == str(batch):
        log.warning('%s=%d: exiting abruptly (test hook)', CRASH_ENV, batch)
        os._exit(17)
    if os.environ.get(STALL_ENV) == f'{rank}:{batch}':
        log.warning('%s=%d:%d: this rank stops responding (test hook)', STALL_ENV, rank, batch)
        while True:
            time.sleep(3600)
