"""torch.distributed.checkpoint (DCP) save and load at a local folder or any URL `llmfoundry.storage` supports.

Everything else about where checkpoints live (paths, listings, small files, removal) is `llmfoundry.storage`;
DCP's fsspec reader and writer are given the very filesystem that layer builds (same S3 endpoint, same
credentials, llm-foundry's `azure://` and `dbfs:/` forms), instead of one fsspec would derive from the URL.
"""

from __future__ import annotations

import contextlib
import os
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
from torch.distributed.checkpoint._fsspec_filesystem import FileSystem as FsspecFileSystem

from llmfoundry.storage import filesystem, is_remote

from .errors import CheckpointError


class _StorageFileSystem(FsspecFileSystem):
    """DCP's fsspec file access, on `llmfoundry.storage.filesystem(url)`; paths are within that filesystem."""

    def init_path(self, path: str | os.PathLike, **kwargs: Any) -> str:
        self.fs, inner = filesystem(os.fspath(path))
        return inner


class _RemoteWriter(FileSystemWriter):
    """FileSystemWriter's file layout through `_StorageFileSystem` (what torch's FsspecWriter does via url_to_fs)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, sync_files=False)  # object stores have no fsync: a file exists once its upload closes
        self.fs = _StorageFileSystem()
        self.path = self.fs.init_path(url)


class _RemoteReader(FileSystemReader):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.fs = _StorageFileSystem()
        self.path = self.fs.init_path(url)


def writer(url: str) -> StorageWriter:
    """A DCP writer for a local folder (plain files) or a remote prefix (fsspec)."""
    return _RemoteWriter(url) if is_remote(url) else FileSystemWriter(filesystem(url)[1])


def reader(url: str) -> StorageReader:
    """A DCP reader for a local folder or a remote prefix."""
    return _RemoteReader(url) if is_remote(url) else FileSystemReader(filesystem(url)[1])


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
