"""One MDS dataset written so that it looks complete (has its index.json) only once it is.

Local: shards go to a hidden sibling folder `.NAME.incomplete` (`storage.atomic_folder`), renamed to NAME
at the end (atomic on one filesystem). Object storage streaming can write to (s3://, gs://, oci://, azure://,
hf://, dbfs:/ ...): streaming's writer uploads each shard as it fills, from one upload thread so uploads finish
in order and index.json is the last object written. Any other fsspec URL (abfs://, memory://, ...): shards are
written to a local temporary folder, then `storage.upload_folder` publishes it with index.json last. On any
failure the prefix is deleted. A kill -9 can leave `.NAME.incomplete` or index-less shards behind, never an
index.json.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import urllib.parse
from types import TracebackType

from streaming import MDSWriter
from streaming.base.storage.upload import UPLOADERS

from llmfoundry import storage
from llmfoundry.data.errors import DataError

DEFAULT_SHARD_SIZE = 1 << 26  # streaming's default; `size_limit` in tests makes several small shards
INDEX_FILE = 'index.json'


def streaming_uploads_to(url: str) -> bool:
    """True when mosaicml-streaming's MDSWriter can upload to `url` itself (its own client for the scheme)."""
    return storage.is_remote(url) and urllib.parse.urlparse(url).scheme in UPLOADERS


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
        # Local: the atomic folder the shards are written into. Remote: the local folder shards wait in until
        # uploaded (by streaming as they fill, or by `__exit__` through storage.upload_folder).
        self._staging = contextlib.ExitStack()
        self._publish_from: str | None = None  # the staged folder to upload at the end (non-streaming schemes)

    def __enter__(self) -> MDSWriter:
        if not storage.is_empty(self.dest):
            raise DataError(f"output '{self.dest}' already exists and is not empty; remove it or choose another")
        if self.remote:
            cache = tempfile.mkdtemp(prefix='llmfoundry-mds-')
            self._staging.callback(shutil.rmtree, cache, ignore_errors=True)
            if streaming_uploads_to(self.dest):
                out: str | tuple[str, str] = (cache, self.dest)
                extra = {'max_workers': 1}  # FIFO uploads: index.json strictly after every shard
            else:
                out, extra, self._publish_from = cache, {}, cache
        else:
            folder = storage.atomic_folder(storage.filesystem(self.dest)[1])
            out, extra = str(self._staging.enter_context(folder)), {}
        try:
            self.writer = MDSWriter(
                out=out, columns=self.columns, compression=self.compression, size_limit=self.size_limit,
                keep_local=False, **extra,
            )  # fmt: skip
        except ValueError as err:  # e.g. an unknown compression name
            self._discard(err)
            raise DataError(str(err)) from err
        return self.writer

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
            if self._publish_from is not None:
                storage.upload_folder(self._publish_from, self.dest, replace=False, last=INDEX_FILE)
        except Exception as err:
            self._discard(err)
            raise
        self._staging.close()  # local: the staged folder becomes dest

    def _discard(self, error: BaseException) -> None:
        """Undo everything after `error`: a local folder is deleted unfinished, never renamed into place."""
        if self.writer is not None:
            self.writer.cancel_future_jobs()
        self._staging.__exit__(type(error), error, error.__traceback__)
        if self.remote:
            storage.remove(self.dest)
