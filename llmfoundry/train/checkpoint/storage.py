"""Where checkpoints live: local folders and s3:// prefixes behind one small interface.

Paths, existence, small text files and removal come from `llmfoundry.data.storage` (same endpoint
convention: S3_ENDPOINT_URL or AWS_ENDPOINT_URL); this module adds what checkpoints need on top:
listing a folder's subfolders and file sizes (to check completeness), and DCP save/load at a URL.
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
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter

from llmfoundry.data.storage import exists, filesystem, is_remote, join, read_text, remove, write_text

from .errors import CheckpointError

__all__ = [
    'dcp_load', 'dcp_reader', 'dcp_save', 'dcp_writer', 'exists', 'file_sizes', 'filesystem', 'is_remote', 'join',
    'list_folders', 'read_text', 'remove', 'write_bytes', 'write_text',
]  # fmt: skip


def _entries(url: str) -> list[dict]:
    """Immediate children of `url` with fsspec's details; [] when it does not exist."""
    fs, path = filesystem(url)
    if is_remote(url):
        fs.invalidate_cache()  # another process (or DCP's own filesystem object) may have written since
    if not fs.exists(path):
        return []
    return [e for e in fs.ls(path, detail=True) if e['name'].rstrip('/') != path]


def list_folders(url: str) -> list[str]:
    """Names (not paths) of the subfolders directly under `url`."""
    return sorted(os.path.basename(e['name'].rstrip('/')) for e in _entries(url) if e['type'] == 'directory')


def file_sizes(url: str) -> dict[str, int]:
    """{file name: size in bytes} for the files directly under `url`."""
    return {os.path.basename(e['name']): int(e['size']) for e in _entries(url) if e['type'] == 'file'}


def write_bytes(url: str, data: bytes) -> None:
    """Write a whole file (a single PUT on S3; locally via a temp name and rename, so it never appears half-written)."""
    fs, path = filesystem(url)
    if is_remote(url):
        fs.pipe_file(path, data)
        fs.invalidate_cache()
        return
    tmp = f'{path}.partial'
    with open(tmp, 'wb') as file:
        file.write(data)
    os.replace(tmp, path)


def _fsspec_kwargs(url: str) -> dict:
    """The options that make DCP's fsspec filesystem talk to the same S3 endpoint as `filesystem`."""
    fs, _ = filesystem(url)
    return dict(fs.storage_options)


def dcp_writer(url: str) -> StorageWriter:
    """A DCP writer for a local folder (plain files) or an s3:// prefix (fsspec/s3fs)."""
    if is_remote(url):
        return FsspecWriter(url, **_fsspec_kwargs(url))
    return FileSystemWriter(filesystem(url)[1])


def dcp_reader(url: str) -> StorageReader:
    """A DCP reader for a local folder or an s3:// prefix."""
    if is_remote(url):
        return FsspecReader(url, **_fsspec_kwargs(url))
    return FileSystemReader(filesystem(url)[1])


def dcp_save(state: dict[str, Any], url: str) -> None:
    """dcp.save to `url`: collectively when a process group exists, else as the only process."""
    with _single_process_is_intended():
        dcp.save(state, storage_writer=dcp_writer(url), no_dist=not dist.is_initialized())


def dcp_load(state: dict[str, Any], url: str, planner: LoadPlanner, *, alone: bool = False) -> None:
    """dcp.load from `url` into `state` in place; `alone` reads without the process group (this rank only).

    DCP reports failures as CheckpointException, a BaseException; it becomes a CheckpointError naming `url`.
    """
    try:
        with _single_process_is_intended():
            dcp.load(state, storage_reader=dcp_reader(url), planner=planner, no_dist=alone or not dist.is_initialized())
    except (Exception, CheckpointException) as err:
        raise CheckpointError(f'loading checkpoint {url} failed: {type(err).__name__}: {err}') from err


@contextlib.contextmanager
def _single_process_is_intended() -> Iterator[None]:
    """Silence DCP's 'assuming the intent is to save/load in a single process': without a process group it is."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='torch.distributed is disabled')
        yield
