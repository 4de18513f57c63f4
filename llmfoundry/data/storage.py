"""Local paths and s3:// URLs behind one small API (fsspec), plus the S3 endpoint convention.

The endpoint comes from S3_ENDPOINT_URL (what mosaicml-streaming reads) or AWS_ENDPOINT_URL (what
boto3/s3fs read); `sync_s3_endpoint_env` makes both name the same server so every library agrees.
"""

from __future__ import annotations

import os
import posixpath
import uuid

import fsspec

from llmfoundry.data.errors import DataError

_REMOTE_SCHEMES = ('s3://',)


def is_remote(url: str) -> bool:
    return '://' in url and not url.startswith('file://')


def check_supported(url: str) -> None:
    if is_remote(url) and not url.startswith(_REMOTE_SCHEMES):
        raise DataError(f"unsupported output location '{url}': use a local path or s3://bucket/prefix")


def sync_s3_endpoint_env() -> None:
    """Copy whichever of S3_ENDPOINT_URL / AWS_ENDPOINT_URL is set into the other."""
    s3 = os.environ.get('S3_ENDPOINT_URL')
    aws = os.environ.get('AWS_ENDPOINT_URL')
    if s3 and not aws:
        os.environ['AWS_ENDPOINT_URL'] = s3
    elif aws and not s3:
        os.environ['S3_ENDPOINT_URL'] = aws


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) for a local path or s3:// URL."""
    check_supported(url)
    if url.startswith('s3://'):
        sync_s3_endpoint_env()
        endpoint = os.environ.get('S3_ENDPOINT_URL')
        fs = fsspec.filesystem('s3', client_kwargs={'endpoint_url': endpoint} if endpoint else {})
        return fs, url[len('s3://'):].rstrip('/')
    return fsspec.filesystem('file'), os.path.abspath(os.path.expanduser(url))


def join(url: str, *parts: str) -> str:
    return posixpath.join(url, *parts) if is_remote(url) else os.path.join(url, *parts)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def is_empty(url: str) -> bool:
    """True when no file exists at or under `url` (empty folders and S3 folder markers do not count)."""
    fs, path = filesystem(url)
    if is_remote(url):
        fs.invalidate_cache()
        # Some servers (SeaweedFS) report a folder marker `prefix/` as a file named `prefix`.
        return not [f for f in fs.find(path) if f.rstrip('/') != path]
    return not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path))


def remove(url: str) -> None:
    """Delete a file or everything under a folder/prefix; absent is fine."""
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    if is_remote(url):
        fs.invalidate_cache()


def read_text(url: str) -> str:
    fs, path = filesystem(url)
    return fs.cat_file(path).decode('utf-8')


def write_text(url: str, text: str) -> None:
    """Write a small file; locally via a temp name and rename so readers never see half of it."""
    fs, path = filesystem(url)
    if is_remote(url):
        fs.pipe_file(path, text.encode('utf-8'))  # a single PUT: S3 objects appear whole
        fs.invalidate_cache()
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp-{uuid.uuid4().hex}'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(tmp, path)


def check_writable(url: str) -> None:
    """Fail early, with the reason, when `url` cannot be written (bad folder, missing bucket, no rights)."""
    fs, path = filesystem(url)
    probe = posixpath.join(path, f'.write-probe-{uuid.uuid4().hex}') if is_remote(url) else None
    try:
        if probe is None:
            os.makedirs(path, exist_ok=True)
            probe = os.path.join(path, f'.write-probe-{uuid.uuid4().hex}')
        fs.pipe_file(probe, b'')
        fs.rm(probe)
    except Exception as err:  # noqa: BLE001 - any failure means "not writable"; the reason is kept
        raise DataError(f"cannot write to output '{url}': {type(err).__name__}: {err}") from err
    finally:
        if is_remote(url):
            fs.invalidate_cache()
