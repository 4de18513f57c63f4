"""Local paths and s3:// URLs behind one small API (fsspec), and writes that appear whole or not at all.

Every part of llmfoundry that reads or writes outside the process goes through here: data prep and the
streaming loader (S3 endpoint), checkpoints (listings, markers, pointers), Hugging Face exports and the
hf_checkpointer (atomic folders).

S3 endpoint: S3_ENDPOINT_URL (what mosaicml-streaming reads) or AWS_ENDPOINT_URL (what boto3/s3fs read);
`sync_s3_endpoint_env` makes both name the same server so every library agrees.

Atomicity: a file is written under a temporary name beside its target and renamed over it (one PUT on S3,
where objects appear whole anyway); a folder is built as a hidden sibling `.NAME.incomplete` and renamed to
NAME once complete (`atomic_folder`). One writer per target: a new write clears the staging debris an
interrupted one left.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import fsspec

_REMOTE_SCHEMES = ('s3://',)


class StorageError(Exception):
    """A location that cannot be used as asked (unsupported scheme, not writable): the message names it."""


# ----- locations ---------------------------------------------------------------------------------------------


def is_remote(url: str) -> bool:
    return '://' in url and not url.startswith('file://')


def check_supported(url: str) -> None:
    if is_remote(url) and not url.startswith(_REMOTE_SCHEMES):
        raise StorageError(f"unsupported output location '{url}': use a local path or s3://bucket/prefix")


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
    import fsspec  # here, not at the top: commands that only parse arguments stay fast

    check_supported(url)
    if url.startswith('s3://'):
        sync_s3_endpoint_env()
        endpoint = os.environ.get('S3_ENDPOINT_URL')
        fs = fsspec.filesystem('s3', client_kwargs={'endpoint_url': endpoint} if endpoint else {})
        return fs, url[len('s3://'):].rstrip('/')
    return fsspec.filesystem('file'), os.path.abspath(os.path.expanduser(url))


def join(url: str, *parts: str) -> str:
    return posixpath.join(url, *parts) if is_remote(url) else os.path.join(url, *parts)


# ----- reading and listing -----------------------------------------------------------------------------------


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


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    return fs.cat_file(path)


def read_text(url: str) -> str:
    return read_bytes(url).decode('utf-8')


def _entries(url: str) -> list[dict]:
    """Immediate children of `url` with fsspec's details; [] when it does not exist."""
    fs, path = filesystem(url)
    if is_remote(url):
        fs.invalidate_cache()  # another process (or another filesystem object) may have written since
    if not fs.exists(path):
        return []
    return [e for e in fs.ls(path, detail=True) if e['name'].rstrip('/') != path]


def list_folders(url: str) -> list[str]:
    """Names (not paths) of the subfolders directly under `url`."""
    return sorted(os.path.basename(e['name'].rstrip('/')) for e in _entries(url) if e['type'] == 'directory')


def file_sizes(url: str) -> dict[str, int]:
    """{file name: size in bytes} for the files directly under `url`."""
    return {os.path.basename(e['name']): int(e['size']) for e in _entries(url) if e['type'] == 'file'}


# ----- writing -----------------------------------------------------------------------------------------------


def write_bytes(url: str, data: bytes) -> None:
    """Write a whole file: one PUT on S3, locally a temporary name beside it renamed over it (never half-written)."""
    fs, path = filesystem(url)
    if is_remote(url):
        fs.pipe_file(path, data)
        fs.invalidate_cache()
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp-{uuid.uuid4().hex}'
    try:
        with open(tmp, 'wb') as file:
            file.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(url: str, text: str) -> None:
    write_bytes(url, text.encode('utf-8'))


def remove(url: str) -> None:
    """Delete a file or everything under a folder/prefix; absent is fine."""
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    if is_remote(url):
        fs.invalidate_cache()


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
        raise StorageError(f"cannot write to output '{url}': {type(err).__name__}: {err}") from err
    finally:
        if is_remote(url):
            fs.invalidate_cache()


# ----- local folders that appear complete or not at all ------------------------------------------------------


def check_empty_destination(out_dir: str | os.PathLike[str]) -> Path:
    """`out_dir` as a Path; FileExistsError unless it is absent or an empty folder."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f'{out} already exists and is not an empty folder; choose a new output folder.')
    return out


def _staging_path(out_dir: str | os.PathLike[str]) -> Path:
    """The hidden sibling `.NAME.incomplete` in which `atomic_folder` builds `out_dir`."""
    out = Path(out_dir)
    return out.parent / f'.{out.name}.incomplete'


@contextlib.contextmanager
def atomic_folder(out_dir: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """Yield a staging folder beside local `out_dir`; it becomes `out_dir` only if the block succeeds.

    `out_dir` must be absent or empty, unless `replace`: then an existing folder is swapped out for the new one
    and deleted afterwards. The folder and everything in it get the modes the user's umask gives a plain mkdir /
    open (some writers, e.g. safetensors, create their files private). A failed block leaves nothing behind.
    """
    out = Path(out_dir) if replace else check_empty_destination(out_dir)
    staging = _staging_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)  # debris of an interrupted write
    staging.mkdir()  # mode 0o777 minus the umask, unlike tempfile.mkdtemp's 0o700
    try:
        yield staging
        _apply_umask(staging)
        if not out.exists():
            os.replace(staging, out)
        elif replace:
            old = out.parent / f'.{out.name}.replaced-{uuid.uuid4().hex[:12]}'
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old)
        else:
            out.rmdir()  # empty (checked above); rename needs the name free
            os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _current_umask() -> int:
    """The process umask, read from /proc on Linux (without changing it), else by setting and restoring it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('Umask:'):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _apply_umask(folder: Path) -> None:
    """Give `folder`, its subfolders and files the modes a plain mkdir / open would: 0o777 / 0o666 minus the umask."""
    mask = _current_umask()
    folder.chmod(0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)
