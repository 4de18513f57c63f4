"""Round trips: corpus -> each data-prep command -> MDS -> exactly the rows the tokenizer predicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mds_reference import document_ids, expected_rows, read_rows

from llmfoundry.data.prep.cli import main as prep_main
from llmfoundry.data.prep.groups import plan_groups

EOS = '<|endoftext|>'


def _run(capsys, *argv: str) -> str:
    code = prep_main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


@pytest.mark.parametrize(
    ('n', 'wrap', 'bos', 'eos'),
    [(128, True, '', EOS), (100, False, '', EOS), (64, True, '<|padding|>', EOS), (256, True, '', '')],
)
def test_json_round_trip(tmp_path, capsys, corpus_docs, corpus_jsonl, tokenizer, tokenizer_dir, n, wrap, bos, eos):
    out = tmp_path / 'mds'
    args = ['convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', str(out), '--concat_tokens', str(n),
            '--tokenizer', tokenizer_dir, '--bos_text', bos, '--eos_text', eos] + ([] if wrap else ['--no_wrap'])
    summary = _run(capsys, *args)
    expected = expected_rows(corpus_docs, tokenizer, n, wrap, bos, eos)
    assert read_rows(str(out)) == expected
    n_tokens = sum(map(len, document_ids(corpus_docs, tokenizer, bos, eos)))
    assert f'done: {len(corpus_docs)} documents, {n_tokens} tokens, {len(expected)} samples, 1 shards' in summary
    assert json.loads((out / 'index.json').read_text())['shards'][0]['column_encodings'] == ['ndarray:int32']


def test_json_text_column_without_concat(tmp_path, capsys, corpus_docs, corpus_jsonl):
    _run(capsys, 'convert-dataset-json', '--path', str(corpus_jsonl), '--out_root', str(tmp_path / 'mds'),
         '--compression', 'zstd')
    assert read_rows(str(tmp_path / 'mds'), column='text') == corpus_docs
    assert (tmp_path / 'mds' / 'shard.00000.mds.zstd').exists()


def test_hf_local_builders_and_workers(tmp_path, capsys, corpus_docs, corpus_jsonl, tokenizer, tokenizer_dir):
    # The json builder with explicit data files for two splits; 'val' reads the 'validation' split.
    common = ['--concat_tokens', '128', '--tokenizer', tokenizer_dir, '--eos_text', EOS]
    head = tmp_path / 'head.jsonl'
    head.write_text(''.join(json.dumps({'text': d}) + '\n' for d in corpus_docs[:5]))
    _run(capsys, 'convert_dataset_hf', '--dataset', 'json', '--data_files', f'train={corpus_jsonl}',
         '--data_files', f'validation={head}', '--splits', 'train', 'val', '--out_root', str(tmp_path / 'a'),
         '--num_workers', '2', *common)
    assert read_rows(str(tmp_path / 'a' / 'train')) == expected_rows(corpus_docs, tokenizer, 128, eos_text=EOS)
    assert read_rows(str(tmp_path / 'a' / 'val')) == expected_rows(corpus_docs[:5], tokenizer, 128, eos_text=EOS)
    # In-process tokenisation writes the same bytes as two workers.
    _run(capsys, 'convert_dataset_hf', '--dataset', 'json', '--data_files', str(corpus_jsonl),
         '--out_root', str(tmp_path / 'b'), *common)
    assert (tmp_path / 'a/train/shard.00000.mds').read_bytes() == (tmp_path / 'b/train/shard.00000.mds').read_bytes()
    # A local folder as --dataset (split from the file name), text column without --concat_tokens.
    folder = tmp_path / 'folder'
    folder.mkdir()
    (folder / 'train.jsonl').write_text(head.read_text())
    _run(capsys, 'convert_dataset_hf', '--dataset', str(folder), '--out_root', str(tmp_path / 'c'))
    assert read_rows(str(tmp_path / 'c' / 'train'), column='text') == corpus_docs[:5]
    # The `text` builder: one document per line.
    lines = corpus_docs[0].splitlines()[:50]
    (tmp_path / 'lines.txt').write_text('\n'.join(lines) + '\n')
    _run(capsys, 'convert_dataset_hf', '--dataset', 'text', '--data_files', str(tmp_path / 'lines.txt'),
         '--out_root', str(tmp_path / 'd'))
    assert read_rows(str(tmp_path / 'd' / 'train'), column='text') == lines


def test_text_to_mds_groups_restart_their_buffers(tmp_path, capsys, corpus_dir, tokenizer, tokenizer_dir):
    out = tmp_path / 'mds'
    summary = _run(capsys, 'convert_text_to_mds', '--input_folder', str(corpus_dir), '--output_folder', str(out),
                   '--concat_tokens', '128', '--tokenizer', tokenizer_dir, '--use_tokenizer_eos',
                   '--processes', '2')
    files = sorted(str(p) for p in Path(corpus_dir).glob('*.txt'))
    expected = []
    for group in plan_groups(files, 2):
        docs = [Path(f).read_text() for f in group]
        expected += expected_rows(docs, tokenizer, 128, eos_text=EOS)
    assert read_rows(str(out)) == expected
    assert sorted(p.name for p in out.iterdir()) == [
        '.conversion_args.json', '.conversion_done', 'group_00000', 'group_00001', 'index.json']
    assert f'{len(files)} documents' in summary and f'{len(expected)} samples' in summary
    # A rerun finds the conversion complete and does nothing.
    again = _run(capsys, 'convert-text-to-mds', '--input_folder', str(corpus_dir), '--output_folder', str(out),
                 '--concat_tokens', '128', '--tokenizer', tokenizer_dir, '--use_tokenizer_eos', '--processes', '2')
    assert 'done: 0 documents' in again and '(2 groups were already complete)' in again


def test_plan_groups_is_contiguous_and_balanced():
    files = [f'f{i}' for i in range(7)]
    assert plan_groups(files, 3) == [['f0', 'f1', 'f2'], ['f3', 'f4'], ['f5', 'f6']]
    assert plan_groups(files[:2], 8) == [['f0'], ['f1']]


@pytest.mark.parametrize('script', ['convert_dataset_hf', 'convert_dataset_json', 'convert_text_to_mds'])
def test_script_wrappers_and_dispatcher_share_flags(script, subprocess_env):
    repo = Path(__file__).resolve().parents[2]
    direct = subprocess.run([sys.executable, str(repo / 'scripts' / 'data_prep' / f'{script}.py'), '--help'],
                            env=subprocess_env, capture_output=True, text=True, timeout=60)
    dashed = subprocess.run([sys.executable, '-m', 'llmfoundry.cli', 'data-prep', script.replace('_', '-'), '--help'],
                            env=subprocess_env, capture_output=True, text=True, timeout=60)
    assert direct.returncode == 0 and dashed.returncode == 0
    assert direct.stdout == dashed.stdout and f'llmfoundry data-prep {script}' in direct.stdout
