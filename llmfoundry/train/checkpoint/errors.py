"""The one error type of the checkpoint package, so callers can tell a bad checkpoint from a bug."""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read as asked; the message names the folder and what is wrong."""
