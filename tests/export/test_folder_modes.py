"""Exported folders and their files get the modes the user's umask gives a plain mkdir / open, although they are
written under a temporary name first (and safetensors creates its file private)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from export_helpers import MPT_BASE, tiny_model

from llmfoundry.callbacks.hf_checkpointer import HuggingFaceCheckpointer
from llmfoundry.export import convert_from_hf, export_to_hf


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _modes(folder: Path) -> dict[str, int]:
    found = {'.': stat.S_IMODE(folder.stat().st_mode)}
    for path in folder.rglob('*'):
        found[str(path.relative_to(folder))] = stat.S_IMODE(path.stat().st_mode)
    return found


def _check(folder: Path, umask: int) -> None:
    modes = _modes(folder)
    assert 'model.safetensors' in modes and 'config.json' in modes
    expected = {name: (0o777 if (folder / name).is_dir() else 0o666) & ~umask for name in modes}
    assert {name: oct(mode) for name, mode in modes.items()} == {name: oct(m) for name, m in expected.items()}


def test_export_and_import_follow_the_umask(tmp_path: Path, umask: int) -> None:
    export_to_hf(tiny_model(MPT_BASE), tmp_path / 'hf')
    _check(tmp_path / 'hf', umask)
    convert_from_hf(tmp_path / 'hf', tmp_path / 'ours')
    _check(tmp_path / 'ours', umask)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temporary folder left behind


def test_hf_checkpointer_folders_follow_the_umask(tmp_path: Path, umask: int) -> None:
    model = tiny_model(MPT_BASE)
    out = tmp_path / 'run' / 'huggingface' / 'ba2'
    HuggingFaceCheckpointer(str(tmp_path / 'run'), '2ba', precision='float32')._write(out, model, model.state_dict(),
                                                                                       None)
    _check(out, umask)
    assert stat.S_IMODE(out.parent.stat().st_mode) == 0o777 & ~umask
