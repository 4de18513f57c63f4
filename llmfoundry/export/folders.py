"""Output folders that appear complete or not at all, and the tokenizer files that travel with a model."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

TOKENIZER_FILES = (
    'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json', 'vocab.json',
    'merges.txt', 'vocab.txt', 'tokenizer.model', 'spiece.model', 'chat_template.jinja', 'chat_template.json',
)


def check_empty_destination(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f'{out} already exists and is not an empty folder; choose a new output folder.')
    return out


@contextlib.contextmanager
def atomic_folder(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `out_dir` to write into; it becomes `out_dir` only if the block succeeds.

    An interrupted or failed export therefore never leaves a folder that looks complete. The folder and its
    files get the permissions the user's umask gives a plain mkdir / open (some writers, e.g. safetensors,
    create their files private).
    """
    out = check_empty_destination(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f'.{out.name}.partial-{uuid.uuid4().hex[:12]}'
    tmp.mkdir()  # mode 0o777 minus the umask, unlike tempfile.mkdtemp's 0o700
    try:
        yield tmp
        apply_umask(tmp)
        if out.exists():
            out.rmdir()  # empty (checked above); rename needs the name free
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def current_umask() -> int:
    """The process umask, read from /proc on Linux (without changing it), else by setting and restoring it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('Umask:'):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(folder: Path) -> None:
    """Give `folder`, its subfolders and files the modes a plain mkdir / open would: 0o777 / 0o666 minus the umask."""
    mask = current_umask()
    folder.chmod(0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


def has_tokenizer(folder: str | Path) -> bool:
    return any((Path(folder) / name).is_file() for name in ('tokenizer.json', 'tokenizer_config.json',
                                                              'tokenizer.model'))


def copy_tokenizer_files(src: str | Path, dst: Path) -> None:
    """Copy the tokenizer files found in `src` verbatim (byte-identical tokenization, no re-serialisation)."""
    if not has_tokenizer(src):
        raise FileNotFoundError(f'{src}: no tokenizer files (tokenizer.json, tokenizer_config.json, tokenizer.model).')
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, dst / name)
