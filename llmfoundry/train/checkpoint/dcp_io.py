"""torch.distributed.checkpoint (DCP) save and load at a URL: a local folder or an s3:// prefix.

Everything else about where checkpoints live (paths, listings, small files, removal) is `llmfoundry.storage`;
DCP's own fsspec filesystem is pointed at the same S3 endpoint.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import (
    CheckpointException,
    FileSystemReader,
    FileSystemWriter,
    LoadPlanner,
    StorageReader,
    StorageWriter,
)
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter

from llmfoundry.storage import filesystem, is_remote

from .errors import CheckpointError


def _fsspec_kwargs(url: str) -> dict:
    """The options that make DCP's fsspec filesystem talk to the same S3 endpoint as `filesystem`."""
    fs, _ = filesystem(url)
    return dict(fs.storage_options)


def writer(url: str) -> StorageWriter:
    """A DCP writer for a local folder (plain files) or an s3:// prefix (fsspec/s3fs)."""
    if is_remote(url):
        return FsspecWriter(url, **_fsspec_kwargs(url))
    return FileSystemWriter(filesystem(url)[1])


def reader(url: str) -> StorageReader:
    """A DCP reader for a local folder or an s3:// prefix."""
    if is_remote(url):
        return FsspecReader(url, **_fsspec_kwargs(url))
    return FileSystemReader(filesystem(url)[1])


def save(state: dict[str, Any], url: str) -> None:
    """dcp.save to `url`: collectively when a process group exists, else as the only process."""
    with _single_process_is_intended():
        dcp.save(state, storage_writer=writer(url), no_dist=not dist.is_initialized())


def load(state: dict[str, Any], url: str, planner: LoadPlanner, *, alone: bool = False) -> None:
    """dcp.load from `url` into `state` in place; `alone` reads without the process group (this rank only).

    DCP reports failures as CheckpointException, a BaseException; it becomes a CheckpointError naming `url`.
    """
    try:
        with _single_process_is_intended():
            dcp.load(state, storage_reader=reader(url), planner=planner, no_dist=alone or not dist.is_initialized())
    except (Exception, CheckpointException) as err:
        raise CheckpointError(f'loading checkpoint {url} failed: {type(err).__name__}: {err}') from err


@contextlib.contextmanager
def _single_process_is_intended() -> Iterator[None]:
    """Silence DCP's 'assuming the intent is to save/load in a single process': without a process group it is."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='torch.distributed is disabled')
        yield
