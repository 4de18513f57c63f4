"""Data prep to object storage (here fsspec's in-memory filesystem): each shard is uploaded as it fills and
index.json last; the result reads back row for row."""

from __future__ import annotations

import uuid

import pytest
from mds_reference import expected_rows, read_rows

from llmfoundry import storage
from llmfoundry.data.prep.cli import main as prep_main

EOS = '<|endoftext|>'


def test_json_to_memory_publishes_index_last_and_reads_back(tmp_path, monkeypatch, capsys, corpus_docs,
                                                            corpus_jsonl, tokenizer, tokenizer_dir):
    remote = f'memory://prep-{uuid.uuid4().hex[:12]}/mds'
    fs, _ = storage.filesystem(remote)
    uploads: list[str] = []
    put_file = fs.put_file
    monkeypatch.setattr(fs, 'put_file', lambda lpath, rpath, **kw: (uploads.append(rpath), put_file(lpath, rpath)))
    args = ['convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', remote, '--concat_tokens', '48',
            '--tokenizer', tokenizer_dir, '--eos_text', EOS, '--compression', 'zstd']
    assert prep_main(args) == 0
    assert f'-> {remote}' in capsys.readouterr().out
    assert uploads[-1].endswith('/index.json') and len(uploads) == len(storage.file_sizes(remote)) >= 2
    storage.download_folder(remote, tmp_path / 'copy')
    assert read_rows(str(tmp_path / 'copy')) == expected_rows(corpus_docs, tokenizer, 48, eos_text=EOS)
    assert prep_main(args) == 1  # the prefix is taken now
    assert f"output '{remote}' already exists and is not empty" in capsys.readouterr().err


@pytest.mark.parametrize(('flag', 'command'), [('--out_root', 'convert_dataset_json'),
                                               ('--output_folder', 'convert_text_to_mds')])
def test_an_unsupported_output_is_refused_before_reading_anything(flag, command, capsys):
    inputs = ['--path', '/no/such.jsonl'] if command == 'convert_dataset_json' else [
        '--input_folder', '/no/such', '--concat_tokens', '8', '--tokenizer', '/no/such-tokenizer']
    assert prep_main([command, *inputs, flag, 'foo://bucket/x']) == 1
    assert f"{flag}='foo://bucket/x': unsupported scheme 'foo://'" in capsys.readouterr().err
