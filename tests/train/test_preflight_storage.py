"""Remote locations in a training YAML are checked before anything is built: an unknown scheme or a missing fsspec
package is a one-line config error naming the key (exit code 2), with no model built and nothing written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from test_train_e2e import TINY_YAML

from llmfoundry.train.entry import main as train

OCIFS_MISSING = importlib.util.find_spec('ocifs') is None


def _run(capsys, monkeypatch, tmp_path: Path, tokenizer_dir: str, mds_dir: Path, *extra: str) -> list[str]:
    """Train the tiny YAML in-process; asserts exit code 2, no model built and no run folder; stderr's lines."""
    monkeypatch.chdir(tmp_path)
    building = []
    monkeypatch.setattr('llmfoundry.train.setup.build_model', lambda section: building.append(section))
    code = train([str(TINY_YAML), f'variables.data_local={mds_dir}', f'variables.tokenizer={tokenizer_dir}',
                  f'save_folder={tmp_path / "run"}', *extra])
    assert code == 2 and not building and not (tmp_path / 'run').exists()
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.skipif(not OCIFS_MISSING, reason='needs an environment without ocifs')
def test_load_path_on_oci_without_ocifs_names_load_path_and_the_install(capsys, monkeypatch, tmp_path,
                                                                        tokenizer_dir, mds_dir):
    lines = _run(capsys, monkeypatch, tmp_path, tokenizer_dir, mds_dir, 'load_path=oci://bucket@ns/ckpt')
    assert lines == ["Config error: load_path='oci://bucket@ns/ckpt': oci:// needs the package that implements "
                     'it: pip install ocifs']


def test_unknown_scheme_lists_the_supported_ones(capsys, monkeypatch, tmp_path, tokenizer_dir, mds_dir):
    lines = _run(capsys, monkeypatch, tmp_path, tokenizer_dir, mds_dir, 'load_path=foo://x/ckpt')
    assert lines == ["Config error: load_path='foo://x/ckpt': unsupported scheme 'foo://'; use a local path, s3://, "
                     'gs://, oci://, azure://, abfs://, hf://, dbfs:/, memory://, file://, or another protocol '
                     'fsspec knows']


def test_hf_checkpointer_and_tokenizer_urls_are_checked(capsys, monkeypatch, tmp_path, tokenizer_dir, mds_dir):
    lines = _run(capsys, monkeypatch, tmp_path, tokenizer_dir, mds_dir,
                 'callbacks.hf_checkpointer.save_folder=foo://b/hf', 'callbacks.hf_checkpointer.save_interval=1ba')
    assert lines[0].startswith("Config error: callbacks.hf_checkpointer.save_folder='foo://b/hf': unsupported")
    lines = _run(capsys, monkeypatch, tmp_path, tokenizer_dir, mds_dir, 'tokenizer.name=foo://b/tok')
    assert lines[0].startswith("Config error: tokenizer.name='foo://b/tok': unsupported scheme 'foo://'")


def test_a_remote_streaming_cannot_read_is_named(capsys, monkeypatch, tmp_path, tokenizer_dir, mds_dir):
    lines = _run(capsys, monkeypatch, tmp_path, tokenizer_dir, mds_dir,
                 'variables.data_remote=memory://mds')
    assert lines[0].startswith("Config error: train_loader.dataset.remote='memory://mds': mosaicml-streaming "
                               'cannot download from it (Unsupported remote path: memory://mds); it reads alipan://, '
                               'azure://, azure-dl://, dbfs:/, gs://, hf://, oci://, s3://, sftp://, or a local')
