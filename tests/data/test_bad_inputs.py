"""Bad inputs fail with a message that says what is wrong, and never leave output that looks complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmfoundry.data.errors import DataError
from llmfoundry.data.prep import dataset_json
from llmfoundry.data.prep.cli import main as prep_main


def _fail(capsys, *argv: str, code: int = 1) -> str:
    assert prep_main(list(argv)) == code
    return capsys.readouterr().err


def _looks_complete(root: Path) -> list[Path]:
    """Anything a reader could take for a finished dataset, or staging debris."""
    return [p for p in root.rglob('*') if p.name in ('index.json', '.conversion_done') or '.incomplete' in p.name]


def test_malformed_json_line_names_file_and_line(tmp_path, capsys, corpus_docs, tokenizer_dir):
    path = tmp_path / 'in.jsonl'
    lines = [json.dumps({'text': d}) for d in corpus_docs[:3]] + ['{"text": "unterminated'] + [
        json.dumps({'text': corpus_docs[4]})]
    path.write_text('\n'.join(lines) + '\n')
    err = _fail(capsys, 'convert_dataset_json', '--path', str(path), '--out_root', str(tmp_path / 'out'),
                '--concat_tokens', '32', '--tokenizer', tokenizer_dir, '--eos_text', '<|endoftext|>')
    assert f'{path}:4: malformed JSON' in err
    assert _looks_complete(tmp_path) == []
    # A line that is JSON but has no string 'text' field is named too.
    path.write_text('{"text": "ok"}\n\n{"body": "x"}\n')
    err = _fail(capsys, 'convert_dataset_json', '--path', str(path), '--out_root', str(tmp_path / 'out'))
    assert f"{path}:3: expected a JSON object with a string field 'text'" in err
    assert _looks_complete(tmp_path) == []


def test_empty_inputs(tmp_path, capsys, tokenizer_dir):
    empty = tmp_path / 'empty.jsonl'
    empty.write_text('')
    err = _fail(capsys, 'convert_dataset_json', '--path', str(empty), '--out_root', str(tmp_path / 'a'))
    assert 'the input holds no documents' in err
    short = tmp_path / 'short.jsonl'
    short.write_text('{"text": "tiny"}\n')
    err = _fail(capsys, 'convert_dataset_json', '--path', str(short), '--out_root', str(tmp_path / 'b'),
                '--concat_tokens', '2048', '--tokenizer', tokenizer_dir)
    assert 'not one full row of --concat_tokens 2048' in err
    (tmp_path / 'no_txt').mkdir()
    (tmp_path / 'no_txt' / 'notes.md').write_text('not a .txt file')
    err = _fail(capsys, 'convert_text_to_mds', '--input_folder', str(tmp_path / 'no_txt'), '--output_folder',
                str(tmp_path / 'c'), '--concat_tokens', '8', '--tokenizer', tokenizer_dir)
    assert 'holds no .txt files' in err
    err = _fail(capsys, 'convert_dataset_json', '--path', str(tmp_path / 'missing.jsonl'), '--out_root',
                str(tmp_path / 'd'))
    assert 'does not exist' in err
    assert _looks_complete(tmp_path) == []


def test_unreadable_file_and_flag_mixups_are_named(tmp_path, capsys, tokenizer_dir):
    from llmfoundry.data.documents import iter_jsonl, read_text_file

    odd = tmp_path / 'odd.txt'
    odd.mkdir()  # not readable as a file (chmod 000 does not stop root)
    with pytest.raises(DataError, match=f'^{odd}: cannot read: Is a directory$'):
        read_text_file(odd)
    with pytest.raises(DataError, match=f'^{odd}: cannot read: Is a directory$'):
        list(iter_jsonl(odd))
    latin1 = tmp_path / 'latin1.jsonl'
    latin1.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=f'^{latin1}:2: not UTF-8 text'):
        list(iter_jsonl(latin1))
    (tmp_path / 'in').mkdir()
    (tmp_path / 'in' / 'a.txt').write_text('a')
    base = ['convert_text_to_mds', '--input_folder', str(tmp_path / 'in'), '--output_folder', str(tmp_path / 'o'),
            '--concat_tokens', '8', '--tokenizer', tokenizer_dir]
    assert 'locally the number of groups is --processes' in _fail(capsys, *base, '--num-tasks', '2')
    assert '--ray-address needs --executor ray' in _fail(capsys, *base, '--ray-address', 'auto')
    assert 'with Ray the number of groups is --num-tasks' in _fail(capsys, *base, '--executor', 'ray',
                                                                   '--processes', '2')
    assert _looks_complete(tmp_path) == []


def test_missing_tokenizer(tmp_path, capsys, corpus_jsonl, corpus_dir):
    err = _fail(capsys, 'convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', str(tmp_path / 'a'),
                '--concat_tokens', '64', '--tokenizer', str(tmp_path / 'no-tokenizer'))
    assert "tokenizer folder '" in err and 'does not exist' in err
    err = _fail(capsys, 'convert_text_to_mds', '--input_folder', str(corpus_dir), '--output_folder',
                str(tmp_path / 'b'), '--concat_tokens', '64', '--tokenizer', 'no-such-org/no-such-tokenizer')
    assert "could not load tokenizer 'no-such-org/no-such-tokenizer'" in err
    err = _fail(capsys, 'convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', str(tmp_path / 'c'),
                '--concat_tokens', '64')
    assert '--concat_tokens needs --tokenizer' in err
    assert list(tmp_path.iterdir()) == []  # checked before anything is written


def test_unwritable_or_taken_output(tmp_path, capsys, corpus_jsonl, corpus_dir, tokenizer_dir):
    blocker = tmp_path / 'a-file'
    blocker.write_text('')
    err = _fail(capsys, 'convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', str(blocker / 'out'))
    assert f"cannot write to output '{blocker / 'out'}'" in err
    err = _fail(capsys, 'convert_text_to_mds', '--input_folder', str(corpus_dir), '--output_folder',
                str(blocker / 'out'), '--concat_tokens', '64', '--tokenizer', tokenizer_dir)
    assert 'cannot write to output' in err
    taken = tmp_path / 'taken'
    taken.mkdir()
    (taken / 'something').write_text('x')
    err = _fail(capsys, 'convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', str(taken))
    assert 'already exists and is not empty' in err
    err = _fail(capsys, 'convert_text_to_mds', '--input_folder', str(corpus_dir), '--output_folder', str(taken),
                '--concat_tokens', '64', '--tokenizer', tokenizer_dir)
    assert 'holds no conversion of ours' in err
    err = _fail(capsys, 'convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', str(tmp_path / 'z'),
                '--compression', 'nonsense')
    assert "unknown compression 'nonsense': use one of br, bz2, gz, snappy, zstd" in err
    assert _looks_complete(tmp_path) == []


def test_hf_sources_that_do_not_load(tmp_path, capsys):
    err = _fail(capsys, 'convert_dataset_hf', '--dataset', 'no-such-org/no-such-dataset', '--out_root',
                str(tmp_path / 'a'))
    assert "could not load dataset 'no-such-org/no-such-dataset'" in err
    err = _fail(capsys, 'convert_dataset_hf', '--dataset', 'json', '--data_files', str(tmp_path / 'none.jsonl'),
                '--out_root', str(tmp_path / 'b'))
    assert "could not load dataset 'json'" in err
    (tmp_path / 'rows.jsonl').write_text('{"body": "no text column"}\n')
    err = _fail(capsys, 'convert_dataset_hf', '--dataset', 'json', '--data_files', str(tmp_path / 'rows.jsonl'),
                '--splits', 'train', 'test', '--out_root', str(tmp_path / 'c'))
    assert "split 'test' not in the dataset; it has ['train']" in err
    err = _fail(capsys, 'convert_dataset_hf', '--dataset', 'json', '--data_files', str(tmp_path / 'rows.jsonl'),
                '--out_root', str(tmp_path / 'c'))
    assert "expected a string column 'text', got columns ['body']" in err
    assert _looks_complete(tmp_path) == []


def test_ctrl_c_leaves_nothing_complete(tmp_path, capsys, corpus_jsonl, tokenizer_dir, monkeypatch):
    real = dataset_json.json_documents

    def interrupted(files):
        for i, doc in enumerate(real(files)):
            if i == 10:
                raise KeyboardInterrupt
            yield doc

    monkeypatch.setattr(dataset_json, 'json_documents', interrupted)
    err = _fail(capsys, 'convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', str(tmp_path / 'out'),
                '--concat_tokens', '16', '--tokenizer', tokenizer_dir, code=130)
    assert 'interrupted; the output is incomplete' in err
    assert _looks_complete(tmp_path) == []


def test_bad_flags_and_commands(capsys):
    assert prep_main(['convert_everything']) == 2
    assert "unknown command 'convert_everything'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        prep_main(['convert_text_to_mds', '--input_folder', 'x'])
    assert exc.value.code == 2
    assert 'the following arguments are required: --output_folder' in capsys.readouterr().err
