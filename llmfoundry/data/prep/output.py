"""One MDS dataset written so that it looks complete (has its index.json) only once it is.

The shards come from `llmfoundry.data.mds_writer` (the bytes mosaicml-streaming writes, without importing it).
Local: shards go to a hidden sibling folder `.NAME.incomplete` (`storage.atomic_folder`), renamed to NAME at
the end (atomic on one filesystem). Object storage (any URL `llmfoundry.storage` writes): each shard is staged
in a local temporary folder, uploaded as soon as it is full and deleted locally; index.json is uploaded last.
On any failure the prefix is deleted. A kill -9 can leave `.NAME.incomplete` or index-less shards behind,
never an index.json.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
from types import TracebackType

from llmfoundry import storage
from llmfoundry.data.errors import DataError
from llmfoundry.data.mds_writer import DEFAULT_SIZE_LIMIT, MDSFormatError, MDSWriter

DEFAULT_SHARD_SIZE = DEFAULT_SIZE_LIMIT  # streaming's default; `size_limit` in tests makes several small shards


class MDSOutput:
    """Context manager yielding an MDSWriter for `dest` (local path or URL, must be empty)."""

    def __init__(
        self, dest: str, columns: dict[str, str], compression: str | None = None,
        size_limit: int = DEFAULT_SHARD_SIZE,
    ) -> None:  # fmt: skip
        self.dest = dest
        self.columns = columns
        self.compression = compression or None
        self.size_limit = size_limit
        self.remote = storage.is_remote(dest)
        self.writer: MDSWriter | None = None
        # Local: the atomic folder the shards are written into. Remote: the folder shards wait in until uploaded.
        self._staging = contextlib.ExitStack()

    def __enter__(self) -> MDSWriter:
        if not storage.is_empty(self.dest):
            raise DataError(f"output '{self.dest}' already exists and is not empty; remove it or choose another")
        if self.remote:
            out = tempfile.mkdtemp(prefix='llmfoundry-mds-')
            self._staging.callback(shutil.rmtree, out, ignore_errors=True)
        else:
            out = str(self._staging.enter_context(storage.atomic_folder(storage.filesystem(self.dest)[1])))
        try:
            self.writer = MDSWriter(
                out, self.columns, self.compression, size_limit=self.size_limit,
                on_file=self._upload if self.remote else None, keep_local=not self.remote,
            )  # fmt: skip
        except MDSFormatError as err:  # e.g. an unknown compression name
            self._discard(err)
            raise DataError(str(err)) from err
        return self.writer

    def _upload(self, path: str) -> None:
        """One finished file (a shard, then index.json last) to object storage, whole."""
        fs, root = storage.filesystem(self.dest)
        fs.put_file(path, posixpath.join(root, os.path.basename(path)))
        fs.invalidate_cache()

    @property
    def num_shards(self) -> int:
        return len(self.writer.shards) if self.writer is not None else 0

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self._discard(exc)
            return
        try:
            self.writer.finish()
        except Exception as err:
            self._discard(err)
            raise
        self._staging.close()  # local: the staged folder becomes dest

    def _discard(self, error: BaseException) -> None:
        """Undo everything after `error`: a local folder is deleted unfinished, never renamed into place."""
        self._staging.__exit__(type(error), error, error.__traceback__)
        if self.remote:
            storage.remove(self.dest)
