"""Fixtures for the callback tests (helpers live in callback_state.py: test modules import them by name)."""

from __future__ import annotations

import pytest
from callback_state import FakeClock, Recorder

from llmfoundry.interfaces import MetricLogger


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def logger(recorder: Recorder) -> MetricLogger:
    return MetricLogger([recorder], is_main=True)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
