"""llmfoundry.storage: whole-file writes and folders that appear complete or not at all, locally and on fsspec's
in-memory filesystem (memory://); schemes and their error messages. S3 is covered by tests/data/test_s3.py,
tests/train/test_checkpoint.py and tests/callbacks/test_hf_checkpointer.py."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import DefaultLoadPlanner

from llmfoundry import storage
from llmfoundry.data.tokenizers import build_tokenizer
from llmfoundry.train.checkpoint import dcp_io


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


def _memory_url() -> str:
    return f'memory://storage-test-{uuid.uuid4().hex[:12]}'


def _hf_folder(root: Path, weights: bytes = b'new') -> Path:
    """A small folder shaped like a Hugging Face export: weights, a nested file, and config.json."""
    (root / 'nested').mkdir(parents=True)
    (root / 'model.safetensors').write_bytes(weights)
    (root / 'nested' / 'tokenizer.json').write_text('{}')
    (root / 'config.json').write_text('{"model_type": "mpt"}')
    return root


def _record_uploads(monkeypatch: pytest.MonkeyPatch, fail_on: str | None = None) -> list[str]:
    """The in-memory filesystem's uploads, in order (fsspec's put goes through put_file); fails on `fail_on`."""
    fs, _ = storage.filesystem('memory://x')
    uploads: list[str] = []
    put_file = fs.put_file

    def recording(lpath, rpath, **kwargs):
        if fail_on and rpath.endswith(fail_on):
            raise OSError(f'upload of {fail_on} failed')
        uploads.append(rpath)
        return put_file(lpath, rpath, **kwargs)

    monkeypatch.setattr(fs, 'put_file', recording)
    return uploads


def test_memory_read_write_list_remove():
    url = _memory_url()
    assert not storage.exists(url) and storage.is_empty(url) and storage.list_folders(url) == []
    storage.write_text(storage.join(url, 'a', 'one.txt'), 'first')
    storage.write_bytes(storage.join(url, 'two.bin'), b'\x00\x01')
    assert storage.read_text(storage.join(url, 'a', 'one.txt')) == 'first'
    assert storage.list_folders(url) == ['a'] and storage.file_sizes(url) == {'two.bin': 2}
    assert storage.exists(url) and not storage.is_empty(url) and storage.is_remote(url)
    storage.check_writable(url)
    storage.remove(storage.join(url, 'a'))
    assert storage.list_folders(url) == [] and storage.file_sizes(url) == {'two.bin': 2}
    storage.remove(url)
    assert not storage.exists(url)


def test_upload_folder_writes_config_json_last(tmp_path, monkeypatch):
    url = _memory_url()
    uploads = _record_uploads(monkeypatch)
    storage.upload_folder(_hf_folder(tmp_path / 'hf'), url, replace=False)
    assert uploads[-1].endswith('/config.json') and len(uploads) == 3
    assert storage.file_sizes(url) == {'config.json': 21, 'model.safetensors': 3}
    with pytest.raises(storage.StorageError, match='already exists and is not empty'):
        storage.upload_folder(tmp_path / 'hf', url, replace=False)
    (tmp_path / 'hf' / 'config.json').unlink()
    with pytest.raises(storage.StorageError, match='has no config.json: it is not a complete folder'):
        storage.upload_folder(tmp_path / 'hf', _memory_url(), replace=False)


def test_a_replace_that_fails_midway_leaves_no_config_json(tmp_path, monkeypatch):
    url = _memory_url()
    storage.upload_folder(_hf_folder(tmp_path / 'old', b'old weights'), url, replace=False)
    (tmp_path / 'old' / 'stale.bin').write_bytes(b'x')  # not in the new folder: must not survive a replace
    _record_uploads(monkeypatch, fail_on='model.safetensors')
    with pytest.raises(OSError, match='upload of model.safetensors failed'):
        storage.upload_folder(_hf_folder(tmp_path / 'new'), url, replace=True)
    assert 'config.json' not in storage.file_sizes(url)  # the half-replaced folder does not look complete
    monkeypatch.undo()
    storage.upload_folder(tmp_path / 'new', url, replace=True)
    assert storage.file_sizes(url) == {'config.json': 21, 'model.safetensors': 3}
    assert storage.read_bytes(storage.join(url, 'model.safetensors')) == b'new'


def test_upload_folder_to_a_local_path_is_an_atomic_folder(tmp_path):
    out = tmp_path / 'published'
    storage.upload_folder(_hf_folder(tmp_path / 'one', b'one'), str(out), replace=False)
    storage.upload_folder(_hf_folder(tmp_path / 'two', b'two'), str(out), replace=True)
    assert (out / 'model.safetensors').read_bytes() == b'two' and (out / 'nested' / 'tokenizer.json').exists()
    assert _hidden(tmp_path) == []
    with pytest.raises(FileExistsError, match='not an empty folder'):
        storage.upload_folder(tmp_path / 'two', str(out), replace=False)


def test_download_folder_keeps_relative_paths(tmp_path):
    url = _memory_url()
    storage.upload_folder(_hf_folder(tmp_path / 'hf'), url, replace=False)
    storage.download_folder(url, tmp_path / 'copy')
    assert sorted(p.relative_to(tmp_path / 'copy').as_posix() for p in (tmp_path / 'copy').rglob('*')) == [
        'config.json', 'model.safetensors', 'nested', 'nested/tokenizer.json']
    with pytest.raises(storage.StorageError, match=r"tokenizer.name='memory://nothing-here': no files there"):
        storage.download_folder('memory://nothing-here', tmp_path / 'none', key='tokenizer.name')


def test_schemes_map_onto_fsspec_protocols(monkeypatch):
    monkeypatch.delenv('DATABRICKS_TOKEN', raising=False)
    monkeypatch.setenv('DATABRICKS_HOST', 'https://adb-1.azuredatabricks.net/')
    with pytest.raises(storage.StorageError, match='^dbfs:/ needs DATABRICKS_TOKEN set'):
        storage.filesystem('dbfs:/Volumes/cat/schema/vol')
    monkeypatch.setenv('DATABRICKS_TOKEN', 'secret')
    assert [storage.scheme(u) for u in ('s3://b/k', 'dbfs:/Volumes/c/s/v', 'azure://c/p', '/x', 'file:///x', 'a/b')] \
        == ['s3', 'dbfs', 'azure', '', 'file', '']
    fs, path = storage.filesystem('dbfs:/Volumes/cat/schema/vol/')  # llm-foundry's one-slash form
    assert (fs.protocol, path, fs.instance) == ('dbfs', '/Volumes/cat/schema/vol', 'adb-1.azuredatabricks.net')
    fs, path = storage.filesystem('memory://bucket/x/')
    assert (fs.protocol, path) == ('memory', '/bucket/x')
    fs, path = storage.filesystem('file:///tmp/x')
    assert 'file' in fs.protocol and path == '/tmp/x' and not storage.is_remote('file:///tmp/x')


def test_unsupported_scheme_lists_the_supported_ones():
    with pytest.raises(storage.StorageError, match=(
            r"^load_path='foo://bucket/x': unsupported scheme 'foo://'; use a local path, s3://, gs://, oci://, "
            r'azure://, abfs://, hf://, dbfs:/, memory://, file://, or another protocol fsspec knows$')):
        storage.check_supported('foo://bucket/x', key='load_path')
    with pytest.raises(storage.StorageError, match=r"^path='foo://bucket/x': unsupported scheme"):
        storage.exists('foo://bucket/x')


@pytest.mark.parametrize(('url', 'package'), [('gs://b/x', 'gcsfs'), ('oci://b@ns/x', 'ocifs'),
                                              ('azure://container/x', 'adlfs'), ('abfs://container/x', 'adlfs')])
def test_a_missing_fsspec_package_is_named_with_its_install(url, package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f'{package} is installed here')
    with pytest.raises(storage.StorageError, match=(
            f"^save_folder='{url}': {url.split(':')[0]}:// needs the package that implements it: "
            f'pip install {package}$')):
        storage.check_supported(url, key='save_folder')


def test_dcp_saves_and_loads_through_the_layer():
    url = f'{_memory_url()}/ep0-ba1'
    dcp_io.save({'w': torch.arange(6.0).reshape(2, 3)}, url)
    assert '.metadata' in storage.file_sizes(url)
    loaded = {'w': torch.zeros(2, 3)}
    dcp_io.load(loaded, url, DefaultLoadPlanner())
    assert loaded['w'].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_a_tokenizer_folder_on_object_storage_is_downloaded_and_loaded(tokenizer_dir):
    url = _memory_url()
    storage.upload_folder(tokenizer_dir, url, replace=False, last='tokenizer_config.json')
    remote = build_tokenizer(url, {'model_max_length': 77})
    local = build_tokenizer(tokenizer_dir)
    assert remote('a b c')['input_ids'] == local('a b c')['input_ids'] and remote.model_max_length == 77
