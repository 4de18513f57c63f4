"""llmfoundry.storage: whole-file writes and folders that appear complete or not at all (local; S3 is covered by
tests/data/test_s3.py and tests/train/test_checkpoint.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfoundry import storage


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith('.'))


def test_write_text_creates_parents_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / 'a' / 'b' / 'note.txt'
    storage.write_text(str(target), 'one')
    storage.write_text(str(target), 'two')
    assert storage.read_text(str(target)) == 'two'
    assert sorted(p.name for p in target.parent.iterdir()) == ['note.txt']


def test_atomic_folder_appears_only_when_the_block_succeeds(tmp_path):
    out = tmp_path / 'out'
    with pytest.raises(RuntimeError), storage.atomic_folder(out) as staging:
        (staging / 'half.bin').write_bytes(b'x')
        raise RuntimeError('writer failed')
    assert not out.exists() and _hidden(tmp_path) == []
    with storage.atomic_folder(out) as staging:
        (staging / 'whole.bin').write_bytes(b'x')
        assert not out.exists()
    assert [p.name for p in out.iterdir()] == ['whole.bin'] and _hidden(tmp_path) == []


def test_atomic_folder_refuses_a_non_empty_destination_unless_replacing(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'old.bin').write_bytes(b'old')
    with pytest.raises(FileExistsError, match='not an empty folder'), storage.atomic_folder(out):
        pass
    with storage.atomic_folder(out, replace=True) as staging:
        (staging / 'new.bin').write_bytes(b'new')
    assert [p.name for p in out.iterdir()] == ['new.bin'] and _hidden(tmp_path) == []


def test_atomic_folder_clears_what_an_interrupted_write_left(tmp_path):
    debris = tmp_path / '.out.incomplete'
    debris.mkdir()
    (debris / 'stale.bin').write_bytes(b'x')
    with storage.atomic_folder(tmp_path / 'out') as staging:
        (staging / 'fresh.bin').write_bytes(b'x')
    assert [p.name for p in (tmp_path / 'out').iterdir()] == ['fresh.bin'] and _hidden(tmp_path) == []


def test_unsupported_scheme_is_a_storage_error():
    with pytest.raises(storage.StorageError, match="unsupported output location 'gs://bucket/x'"):
        storage.exists('gs://bucket/x')
