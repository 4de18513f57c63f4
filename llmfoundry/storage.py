"""Local paths and object-storage URLs behind one small API (fsspec), and writes that appear whole or not at all.

Every part of llmfoundry that reads or writes outside the process goes through here: data prep and the
streaming loader, checkpoints (listings, markers, pointers, DCP shards), Hugging Face exports and the
hf_checkpointer, remote tokenizer folders.

Schemes: llm-foundry's URL forms are mapped onto fsspec protocols, each with its own package and credentials:

    s3://bucket/path          s3     s3fs (installed)   AWS credentials; endpoint below
    gs://bucket/path          gcs    gcsfs              Google application-default credentials
    oci://bucket@namespace/p  oci    ocifs              ~/.oci/config
    azure://container/path    abfs   adlfs              account from AZURE_ACCOUNT_NAME, key from
                                                        AZURE_ACCOUNT_ACCESS_KEY (mosaicml-streaming's variables),
                                                        else adlfs's own (AZURE_STORAGE_ACCOUNT_NAME, Azure identity)
    abfs://container/path     abfs   adlfs              adlfs's form; also abfs://container@ACCOUNT.dfs.core.windows.net/p
    hf://datasets/org/repo/p  hf     huggingface_hub    HF_TOKEN / the cached login
    dbfs:/path (one slash)    dbfs   fsspec + requests  DATABRICKS_HOST and DATABRICKS_TOKEN (DBFS REST API)
    memory://path             memory fsspec             this process only (tests)
    file:///path, plain paths local

Any other protocol fsspec knows (sftp://, http://, az://, ...) works too, configured the fsspec way. A scheme
whose package is missing fails naming the `pip install`; an unknown one lists the supported schemes. Functions
that check a location take `key`, the config key or flag it came from, so that errors name it.

S3 endpoint: S3_ENDPOINT_URL (what mosaicml-streaming reads) or AWS_ENDPOINT_URL (what boto3/s3fs read);
`sync_s3_endpoint_env` makes both name the same server so every library agrees.

Atomicity: a file is written under a temporary name beside its target and renamed over it (one PUT on object
storage, where objects appear whole anyway); a local folder is built as a hidden sibling `.NAME.incomplete`
and renamed to NAME once complete (`atomic_folder`); object storage has no folder rename, so `upload_folder`
orders its writes instead (the file that makes a folder loadable goes last). One writer per target: a new write
clears the staging debris an interrupted one left.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import fsspec

# llm-foundry's URL scheme -> (fsspec protocol, pip package implementing it); None: part of fsspec itself.
SCHEMES: dict[str, tuple[str, str | None]] = {
    's3': ('s3', 's3fs'),
    'gs': ('gcs', 'gcsfs'),
    'oci': ('oci', 'ocifs'),
    'azure': ('abfs', 'adlfs'),
    'abfs': ('abfs', 'adlfs'),
    'hf': ('hf', 'huggingface_hub'),
    'dbfs': ('dbfs', 'requests'),
    'memory': ('memory', None),
    'file': ('file', None),
}
SUPPORTED = 'a local path, s3://, gs://, oci://, azure://, abfs://, hf://, dbfs:/, memory://, file://'
# Written last by upload_folder: transformers (and load_model) treat a folder without it as no model at all.
CONFIG_FILE = 'config.json'


class StorageError(Exception):
    """A location that cannot be used as asked (unsupported scheme, not writable): the message names it."""


# ----- locations ---------------------------------------------------------------------------------------------


def scheme(url: str) -> str:
    """The URL scheme ('s3', 'dbfs', ...), '' for a plain local path. `dbfs:/Volumes/...` has one slash."""
    if url.startswith('dbfs:/'):
        return 'dbfs'
    head, sep, _ = url.partition('://')
    return head if sep and head.replace('-', '').replace('+', '').replace('.', '').isalnum() else ''


def is_remote(url: str) -> bool:
    return scheme(url) not in ('', 'file')


def _protocol(url: str) -> tuple[str, str | None]:
    """(fsspec protocol, pip package) for `url`'s scheme; any protocol fsspec knows maps onto itself."""
    name = scheme(url) or 'file'
    return SCHEMES.get(name, (name, None))


def check_supported(url: str, key: str = 'path') -> None:
    """StorageError naming `key` unless `url` is local or a scheme whose fsspec implementation is importable."""
    import fsspec  # here, not at the top: commands that only parse arguments stay fast

    protocol, package = _protocol(url)
    shown = 'dbfs:/' if scheme(url) == 'dbfs' else f'{scheme(url)}://'
    if protocol not in fsspec.available_protocols():
        raise StorageError(f"{key}={url!r}: unsupported scheme '{shown}'; use {SUPPORTED}, "
                           'or another protocol fsspec knows')
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as err:
        install = f'pip install {package}' if package else str(err)
        raise StorageError(f"{key}={url!r}: {shown} needs the package that implements it: {install}") from err


def sync_s3_endpoint_env() -> None:
    """Copy whichever of S3_ENDPOINT_URL / AWS_ENDPOINT_URL is set into the other."""
    s3 = os.environ.get('S3_ENDPOINT_URL')
    aws = os.environ.get('AWS_ENDPOINT_URL')
    if s3 and not aws:
        os.environ['AWS_ENDPOINT_URL'] = s3
    elif aws and not s3:
        os.environ['S3_ENDPOINT_URL'] = aws


def _options(name: str) -> dict[str, Any]:
    """Storage options for llm-foundry's schemes whose settings live in environment variables fsspec does not read."""
    if name == 's3':
        sync_s3_endpoint_env()
        endpoint = os.environ.get('S3_ENDPOINT_URL')
        return {'client_kwargs': {'endpoint_url': endpoint}} if endpoint else {}
    if name == 'azure':
        env = {'account_name': 'AZURE_ACCOUNT_NAME', 'credential': 'AZURE_ACCOUNT_ACCESS_KEY'}
        return {option: os.environ[var] for option, var in env.items() if os.environ.get(var)}
    if name == 'dbfs':  # fsspec's DatabricksFileSystem takes the workspace host without https://
        missing = [var for var in ('DATABRICKS_HOST', 'DATABRICKS_TOKEN') if not os.environ.get(var)]
        if missing:
            raise StorageError(f"dbfs:/ needs {' and '.join(missing)} set (the workspace URL and an access token)")
        host = os.environ['DATABRICKS_HOST'].removeprefix('https://').rstrip('/')
        return {'instance': host, 'token': os.environ['DATABRICKS_TOKEN']}
    return {}


def filesystem(url: str, key: str = 'path') -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path within it) for a local path or a URL of any supported scheme."""
    import fsspec

    check_supported(url, key)
    name = scheme(url)
    if not is_remote(url):
        return fsspec.filesystem('file'), os.path.abspath(os.path.expanduser(url.removeprefix('file://')))
    if name == 'dbfs':  # fsspec's dbfs does not parse `dbfs:/...`; its paths are absolute DBFS paths
        return fsspec.filesystem('dbfs', **_options(name)), '/' + url[len('dbfs:/'):].strip('/')
    protocol, _ = _protocol(url)
    fs, path = fsspec.core.url_to_fs(f'{protocol}://{url.split("://", 1)[1]}', **_options(name))
    return fs, path.rstrip('/')


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


def check_writable(url: str, key: str = 'output') -> None:
    """Fail early, with the reason, when `url` cannot be written (bad folder, missing bucket, no rights)."""
    fs, path = filesystem(url, key)
    probe = posixpath.join(path, f'.write-probe-{uuid.uuid4().hex}') if is_remote(url) else None
    try:
        if probe is None:
            os.makedirs(path, exist_ok=True)
            probe = os.path.join(path, f'.write-probe-{uuid.uuid4().hex}')
        fs.pipe_file(probe, b'')
        fs.rm(probe)
    except Exception as err:  # noqa: BLE001 - any failure means "not writable"; the reason is kept
        raise StorageError(f"cannot write to {key} '{url}': {type(err).__name__}: {err}") from err
    finally:
        if is_remote(url):
            fs.invalidate_cache()


# ----- whole folders to and from object storage ---------------------------------------------------------------


def upload_folder(local_dir: str | os.PathLike[str], url: str, *, replace: bool, last: str = CONFIG_FILE) -> None:
    """Publish the local folder `local_dir` at `url` so that it looks complete (holds `last`) only once it is.

    Local `url`: a copy built in `atomic_folder` and renamed into place. Object storage cannot rename a prefix,
    so completeness is one file instead: `last` (config.json for a Hugging Face folder, whose absence makes
    transformers see no model; index.json for MDS) is uploaded after every other file. Replacing an existing
    folder first deletes its `last`, then the rest of it, then uploads: a reader at any moment sees either the
    old complete folder or an incomplete one, never new weights under an old config. A failed upload leaves a
    folder without `last`, which no loader accepts. Without `replace` the destination must be empty.
    """
    local = Path(local_dir)
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob('*') if p.is_file())
    if last not in files:
        raise StorageError(f"{local} has no {last}: it is not a complete folder to publish")
    if not is_remote(url):
        with atomic_folder(filesystem(url)[1], replace=replace) as staging:
            shutil.copytree(local, staging, dirs_exist_ok=True)
        return
    fs, root = filesystem(url)
    if not is_empty(url):
        if not replace:
            raise StorageError(f"'{url}' already exists and is not empty; remove it or allow replacing it")
        remove(join(url, last))  # before anything else: from now on the old folder no longer looks complete
        remove(url)
    body = [name for name in files if name != last]
    if body:
        fs.put([str(local / name) for name in body], [posixpath.join(root, name) for name in body])
    fs.put_file(str(local / last), posixpath.join(root, last))
    fs.invalidate_cache()


def download_folder(url: str, local_dir: str | os.PathLike[str], key: str = 'path') -> None:
    """Copy every file under `url` into the local folder `local_dir` (created), keeping relative paths."""
    fs, root = filesystem(url, key)
    fs.invalidate_cache()
    found = [path for path in fs.find(root) if path.rstrip('/') != root]
    if not found:
        raise StorageError(f"{key}={url!r}: no files there")
    for path in found:
        target = Path(local_dir, posixpath.relpath(path, root))
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(path, str(target))


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
