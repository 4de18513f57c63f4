"""The torchao/torch pytree notice is dropped from every process; other records of that logger still pass."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys

import pytest

import llmfoundry  # noqa: F401  (installs the filter)
from llmfoundry.third_party_logs import ENUM_NOTICE


@pytest.mark.skipif(importlib.util.find_spec('torchao') is None, reason='the notice comes from torchao')
def test_importing_the_model_prints_no_pytree_notice() -> None:
    def stderr_of(code: str) -> str:
        return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stderr

    assert ENUM_NOTICE in stderr_of('import torchao')  # the notice exists without our filter
    assert ENUM_NOTICE not in stderr_of('import llmfoundry.models.mpt.modeling_mpt, torchao')


def test_other_records_of_that_logger_pass(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger('torch.utils._pytree')
    with caplog.at_level(logging.WARNING, logger='torch.utils._pytree'):
        logger.warning("<enum 'X'> %s. Calling register_constant() ...", ENUM_NOTICE)
        logger.warning('some other pytree warning')
    assert [record.getMessage() for record in caplog.records] == ['some other pytree warning']
