"""Quiet one known third-party notice that says nothing to our users.

transformers imports torchao whenever it is installed (our `float8` extra), and torchao 0.18 registers two Enum
classes with torch's pytree in a way torch 2.14 calls deprecated: two `torch.utils._pytree` warnings in every process
of every run, about code that is neither ours nor the user's. Only those records are dropped.
"""

from __future__ import annotations

import logging

ENUM_NOTICE = 'is an Enum subclass and is now natively supported by torch.compile'


def _not_the_enum_notice(record: logging.LogRecord) -> bool:
    return ENUM_NOTICE not in record.getMessage()


def quiet_known_notices() -> None:
    logger = logging.getLogger('torch.utils._pytree')
    if _not_the_enum_notice not in logger.filters:
        logger.addFilter(_not_the_enum_notice)
