"""`tokenizer: {name, kwargs}` loading and `llmfoundry tokenizer train`."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from llmfoundry.data.tokenizer_cli import main as tokenizer_main
from llmfoundry.data.tokenizers import build_tokenizer


def test_trained_tokenizer_loads_with_auto_tokenizer(tokenizer_dir: str, corpus_docs: list[str]) -> None:
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert len(tok) == 800
    assert tok.eos_token == '<|endoftext|>' and tok.pad_token == '<|padding|>'
    assert tok.eos_token_id != tok.pad_token_id
    assert sorted(tok('x')) == ['attention_mask', 'input_ids']
    # Byte-level: any text round-trips exactly, and special tokens encode as one id.
    text = corpus_docs[0][:2000] + ' naïve 数据 🙂'
    assert tok.decode(tok(text)['input_ids']) == text
    assert tok('<|endoftext|>', add_special_tokens=False)['input_ids'] == [tok.eos_token_id]
    # Trained on Python sources: common keywords are single tokens.
    assert len(tok(' return', add_special_tokens=False)['input_ids']) == 1


def test_train_reads_jsonl_and_is_deterministic(tmp_path, corpus_jsonl) -> None:
    outs = []
    for name in ('a', 'b'):
        out = tmp_path / name
        assert tokenizer_main(['train', '--input', str(corpus_jsonl), '--vocab-size', '400', '--out', str(out)]) == 0
        outs.append((out / 'tokenizer.json').read_text())
    assert outs[0] == outs[1]
    assert len(AutoTokenizer.from_pretrained(tmp_path / 'a')) == 400


def test_train_errors(tmp_path, capsys) -> None:
    out = str(tmp_path / 'o')
    assert tokenizer_main(['train', '--input', str(tmp_path / 'nope'), '--vocab-size', '500', '--out', out]) == 1
    assert 'does not exist' in capsys.readouterr().err
    assert tokenizer_main(['train', '--input', str(tmp_path), '--vocab-size', '100', '--out', out]) == 1
    assert '--vocab-size must be at least' in capsys.readouterr().err


def test_build_tokenizer_kwargs_pass_through(tokenizer_dir: str) -> None:
    tok = build_tokenizer(tokenizer_dir, {'model_max_length': 321})
    assert tok.model_max_length == 321


def test_build_tokenizer_missing_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match='does not exist'):
        build_tokenizer(str(tmp_path / 'missing'))
    with pytest.raises(OSError, match="could not load tokenizer 'no-such-org/no-such-tokenizer'"):
        build_tokenizer('no-such-org/no-such-tokenizer')


def test_build_tokenizer_without_eos(tmp_path) -> None:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=bpe).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match='has no EOS token'):
        build_tokenizer(str(tmp_path))
    # An EOS given through kwargs fixes it, and becomes the pad token when there is none.
    bpe.add_special_tokens(['<eos>'])
    PreTrainedTokenizerFast(tokenizer_object=bpe).save_pretrained(tmp_path)
    tok = build_tokenizer(str(tmp_path), {'eos_token': '<eos>'})
    assert tok.eos_token == '<eos>' and tok.pad_token_id == tok.eos_token_id


def test_train_skips_binary_files_in_folders_with_one_line(tmp_path, caplog, corpus_docs: list[str]) -> None:
    (tmp_path / 'in' / '__pycache__').mkdir(parents=True)
    (tmp_path / 'in' / 'a.txt').write_text(corpus_docs[0], encoding='utf-8')
    for i in range(3):
        (tmp_path / 'in' / '__pycache__' / f'm{i}.pyc').write_bytes(b'\xff\xfe\x00binary' * 10)
    out = str(tmp_path / 'tok')
    with caplog.at_level('WARNING'):
        assert tokenizer_main(['train', '--input', str(tmp_path / 'in'), '--vocab-size', '300', '--out', out]) == 0
    messages = [r.getMessage() for r in caplog.records if 'skip' in r.getMessage()]
    assert messages == [f"skipped 3 files that are not UTF-8 text (e.g. {tmp_path / 'in' / '__pycache__' / 'm0.pyc'})"]

    explicit = tmp_path / 'in' / '__pycache__' / 'm1.pyc'  # a file named on the command line must be text
    assert tokenizer_main(['train', '--input', str(explicit), '--vocab-size', '300', '--out', out]) == 1
