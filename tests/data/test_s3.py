"""Conversion to and streaming from a real S3 server (SeaweedFS on loopback), no mocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from mds_reference import expected_rows, read_rows

from llmfoundry import storage
from llmfoundry.data.prep.cli import main as prep_main
from llmfoundry.data.prep.groups import CRASH_ENV, DONE_MARKER
from llmfoundry.data.text_loader import build_text_dataloader

EOS = '<|endoftext|>'
pytestmark = pytest.mark.slow


def _objects(url: str) -> dict[str, bytes]:
    fs, root = storage.filesystem(url)
    fs.invalidate_cache()
    return {path[len(root) + 1:]: (b'' if path.endswith(DONE_MARKER) else fs.cat_file(path))
            for path in sorted(fs.find(root))}


def test_json_to_s3_then_stream_exact_rows(s3_prefix, tmp_path, capsys, corpus_docs, corpus_jsonl, tokenizer,
                                           tokenizer_dir):
    remote = f'{s3_prefix}/mds'
    assert prep_main(['convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', remote,
                      '--concat_tokens', '96', '--tokenizer', tokenizer_dir, '--eos_text', EOS, '--no_wrap']) == 0
    assert f'-> {remote}' in capsys.readouterr().out
    assert sorted(_objects(remote)) == ['index.json', 'shard.00000.mds']
    expected = expected_rows(corpus_docs, tokenizer, 96, wrap=False, eos_text=EOS)
    # S3_ENDPOINT_URL alone is enough for streaming and s3fs alike.
    os.environ.pop('AWS_ENDPOINT_URL')
    loader = build_text_dataloader(
        {'name': 'text', 'dataset': {'remote': remote, 'max_seq_len': 96}}, tokenizer, 4)
    assert [row for b in loader for row in b['input_ids'].tolist()] == expected
    # One stream local, one on S3, mixed in one loader.
    local = str(tmp_path / 'local')
    assert prep_main(['convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', local,
                      '--concat_tokens', '96', '--tokenizer', tokenizer_dir, '--eos_text', EOS]) == 0
    streams = {'disk': {'local': local}, 'bucket': {'remote': remote, 'local': str(tmp_path / 'cache')}}
    loader = build_text_dataloader({'dataset': {'streams': streams, 'max_seq_len': 96}}, tokenizer, 4)
    rows = [row for b in loader for row in b['input_ids'].tolist()]
    assert sorted(rows) == sorted(expected_rows(corpus_docs, tokenizer, 96, eos_text=EOS) + expected)


def test_text_to_mds_on_s3_killed_and_resumed(s3_prefix, tmp_path, corpus_dir, tokenizer_dir, capsys):
    flags = ['--input_folder', str(corpus_dir), '--concat_tokens', '64', '--tokenizer', tokenizer_dir,
             '--use_tokenizer_eos', '--processes', '3']
    clean_local = tmp_path / 'clean'
    assert prep_main(['convert_text_to_mds', '--output_folder', str(clean_local), *flags]) == 0
    remote = f'{s3_prefix}/text'
    crash = subprocess.run(
        [sys.executable, '-m', 'llmfoundry.cli', 'data-prep', 'convert_text_to_mds', '--output_folder', remote,
         *flags],
        env={**os.environ, CRASH_ENV: '1'}, start_new_session=True, capture_output=True, timeout=120,
    )
    assert crash.returncode == -signal.SIGKILL, crash.stderr.decode()
    after_crash = _objects(remote)
    assert 'index.json' not in after_crash and DONE_MARKER not in after_crash
    capsys.readouterr()
    assert prep_main(['convert_text_to_mds', '--output_folder', remote, *flags]) == 0
    assert 'groups were already complete' in capsys.readouterr().out
    local_files = {str(p.relative_to(clean_local)): (b'' if p.name == DONE_MARKER else p.read_bytes())
                   for p in clean_local.rglob('*') if p.is_file()}
    assert _objects(remote) == local_files
    assert read_rows(str(tmp_path / 'cache'), remote=remote) == read_rows(str(clean_local))


def test_hf_to_s3(s3_prefix, tmp_path, corpus_docs, corpus_jsonl, tokenizer, tokenizer_dir):
    assert prep_main(['convert_dataset_hf', '--dataset', 'json', '--data_files', str(corpus_jsonl), '--out_root',
                      s3_prefix, '--concat_tokens', '128', '--tokenizer', tokenizer_dir, '--bos_text', EOS]) == 0
    assert read_rows(str(tmp_path / 'cache'), remote=f'{s3_prefix}/train') == expected_rows(
        corpus_docs, tokenizer, 128, bos_text=EOS)


def test_s3_output_errors(s3_prefix, corpus_jsonl, capsys):
    assert prep_main(['convert_dataset_json', '--path', str(corpus_jsonl), '--out_root',
                      's3://no-such-bucket-llmf/x']) == 1
    assert "cannot write to output 's3://no-such-bucket-llmf/x'" in capsys.readouterr().err
    assert prep_main(['convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', f'{s3_prefix}/a']) == 0
    assert prep_main(['convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', f'{s3_prefix}/a']) == 1
    assert 'already exists and is not empty' in capsys.readouterr().err
    assert prep_main(['convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', 'foo://bucket/x']) == 1
    assert "--out_root='foo://bucket/x': unsupported scheme 'foo://'" in capsys.readouterr().err
