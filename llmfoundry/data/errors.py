"""The exception type for user-facing data problems, and how the data CLIs report them (one line, no traceback)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from llmfoundry.config.validation import ConfigError
from llmfoundry.storage import StorageError


class DataError(Exception):
    """Bad input or bad configuration: the message says what to change. (An unusable output location raises
    llmfoundry.storage.StorageError, which the data-prep CLI reports the same way.)"""


def run_reporting_errors(prog: str, run: Callable[[], object]) -> int:
    """A data command's exit status: 0 when `run` finishes; 1 with one line on stderr for bad data, a bad setting
    or an unusable location; 130 on Ctrl-C (the output is then incomplete, and never looks complete)."""
    try:
        run()
    except (DataError, ConfigError, StorageError) as err:
        print(f'{prog}: error: {err}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'{prog}: interrupted; the output is incomplete', file=sys.stderr)
        return 130
    return 0
