"""The `text` pretraining loader: exact batches, columns and dtypes, key checks, mixing, resumption."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from mds_reference import expected_rows
from streaming import MDSWriter

from llmfoundry.data.labels import IGNORE_INDEX
from llmfoundry.data.prep.cli import main as prep_main
from llmfoundry.data.text_loader import build_text_dataloader

EOS = '<|endoftext|>'
L = 64


@pytest.fixture(scope='module')
def packed(tmp_path_factory, corpus_jsonl, tokenizer_dir) -> str:
    """The corpus as rows of L tokens, documents separated by EOS."""
    out = str(tmp_path_factory.mktemp('packed') / 'mds')
    assert prep_main(['convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', out,
                      '--concat_tokens', str(L), '--tokenizer', tokenizer_dir, '--eos_text', EOS]) == 0
    return out


def _loader(tokenizer, batch_size: int = 4, loader: dict | None = None, **dataset):
    cfg = {'name': 'text', 'dataset': {'max_seq_len': L, **dataset}, **(loader or {})}
    return build_text_dataloader(cfg, tokenizer, batch_size)


def _rows(batches) -> list[list[int]]:
    return [row for b in batches for row in b['input_ids'].tolist()]


def test_loader_yields_exactly_the_packed_rows(packed, tokenizer, corpus_docs):
    batches = list(_loader(tokenizer, local=packed, eos_token_id=tokenizer.eos_token_id))
    expected = expected_rows(corpus_docs, tokenizer, L, eos_text=EOS)
    assert _rows(batches) == expected
    eos = tokenizer.eos_token_id
    for b in batches:
        assert b['input_ids'].dtype == torch.long and b['input_ids'].shape[1] == L
        assert b['attention_mask'].eq(1).all() and torch.equal(b['labels'], b['input_ids'])
        for row, seq in zip(b['input_ids'].tolist(), b['sequence_id'].tolist()):
            assert seq == [sum(t == eos for t in row[:i]) for i in range(L)]  # EOS seen before position i
    assert any(b['sequence_id'].max() > 0 for b in batches)  # rows do span several documents


def test_bos_separator_sequence_ids(tmp_path, tokenizer, corpus_docs, corpus_jsonl, tokenizer_dir):
    out = str(tmp_path / 'mds')
    assert prep_main(['convert_dataset_json', '--path', str(corpus_jsonl), '--out_root', out, '--concat_tokens',
                      str(L), '--tokenizer', tokenizer_dir, '--bos_text', EOS]) == 0
    bos = tokenizer.bos_token_id
    for b in _loader(tokenizer, local=out, bos_token_id=bos):
        for row, seq in zip(b['input_ids'].tolist(), b['sequence_id'].tolist()):
            starts = [int(t == bos) for t in row]
            assert seq == [sum(starts[1:i + 1]) for i in range(L)]  # a new document at each later BOS


def test_text_column_is_tokenised_truncated_and_padded(tmp_path, tokenizer, corpus_docs):
    docs = ['short text', corpus_docs[0], 'def f():\n    return 1\n']
    with MDSWriter(out=str(tmp_path / 'mds'), columns={'text': 'str'}) as writer:
        for doc in docs:
            writer.write({'text': doc})
    (batch,) = list(_loader(tokenizer, batch_size=3, local=str(tmp_path / 'mds')))
    for i, doc in enumerate(docs):
        ids = tokenizer(doc)['input_ids'][:L]
        assert batch['input_ids'][i, :len(ids)].tolist() == ids
        assert batch['input_ids'][i, len(ids):].eq(tokenizer.pad_token_id).all()
        assert batch['attention_mask'][i].tolist() == [1] * len(ids) + [0] * (L - len(ids))
        assert batch['labels'][i].tolist() == ids + [IGNORE_INDEX] * (L - len(ids))
    assert 'sequence_id' not in batch


@pytest.mark.parametrize(('column', 'encoding', 'loader_kwargs'), [
    ('bytes', 'int64', {}),                                   # legacy llm-foundry layout, int64 default
    ('bytes', 'uint16', {'token_encoding_type': 'uint16'}),
    ('ndarray:int16', 'int16', {}),                           # any integer dtype
    ('ndarray:uint32', 'uint32', {}),
])
def test_token_column_encodings(tmp_path, tokenizer, column, encoding, loader_kwargs):
    rows = np.arange(5 * L).reshape(5, L).astype(encoding) % 700
    with MDSWriter(out=str(tmp_path / 'mds'), columns={'tokens': column}) as writer:
        for row in rows:
            writer.write({'tokens': row.tobytes() if column == 'bytes' else row})
    batches = list(_loader(tokenizer, batch_size=5, local=str(tmp_path / 'mds'), **loader_kwargs))
    assert _rows(batches) == rows.astype(np.int64).tolist()


def test_unknown_keys_name_path_and_closest(tokenizer, packed):
    with pytest.raises(ValueError, match=r"unknown key 'train_loader.dataset.shufle'; did you mean "
                                         r"'train_loader.dataset.shuffle'\?"):
        _loader(tokenizer, local=packed, shufle=True)
    with pytest.raises(ValueError, match=r"unknown key 'train_loader.num_worker'; did you mean "
                                         r"'train_loader.num_workers'\?"):
        _loader(tokenizer, loader={'num_worker': 2}, local=packed)
    with pytest.raises(ValueError, match=r"'train_loader.dataset.streams.a.proportoin'; did you mean "
                                         r"'train_loader.dataset.streams.a.proportion'"):
        _loader(tokenizer, streams={'a': {'local': packed, 'proportoin': 1.0}})
    with pytest.raises(ValueError, match="'eval_loader.dataset.max_seq_len' is required"):
        build_text_dataloader({'dataset': {'local': packed}}, tokenizer, 2, section='eval_loader')
    with pytest.raises(ValueError, match='at most one of'):
        _loader(tokenizer, local=packed, eos_token_id=0, bos_token_id=0)
    with pytest.raises(ValueError, match="token_encoding_type 'float32'"):
        _loader(tokenizer, local=packed, token_encoding_type='float32')


def test_shuffle_is_deterministic_for_a_seed(packed, tokenizer):
    kwargs = {'local': packed, 'shuffle': True, 'num_canonical_nodes': 1}
    first = _rows(_loader(tokenizer, shuffle_seed=17, **kwargs))
    again = _rows(_loader(tokenizer, shuffle_seed=17, **kwargs))
    other = _rows(_loader(tokenizer, shuffle_seed=18, **kwargs))
    plain = _rows(_loader(tokenizer, local=packed))
    assert first == again and first != other and first != plain
    assert sorted(first) == sorted(plain)


@pytest.mark.parametrize('num_workers', [0, 2])
def test_resume_continues_exactly(packed, tokenizer, num_workers):
    kwargs = {'local': packed, 'shuffle': True, 'shuffle_seed': 5, 'num_canonical_nodes': 1,
              'eos_token_id': tokenizer.eos_token_id}
    loader_cfg = {'num_workers': num_workers, 'drop_last': True}
    full = list(_loader(tokenizer, loader=loader_cfg, **kwargs))
    k = 3
    first = _loader(tokenizer, loader=loader_cfg, **kwargs)
    it = iter(first)
    head = [next(it) for _ in range(k)]
    state = first.state_dict()
    del it, first
    assert state['sample_in_epoch'] == k * 4 and state['epoch'] == 0
    resumed = _loader(tokenizer, loader=loader_cfg, **kwargs)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(full) > k + 2
    for got, want in zip(head + rest, full, strict=True):
        assert got.keys() == want.keys() and all(torch.equal(got[key], want[key]) for key in got)


def test_streams_mix_by_proportion_repeat_and_choose(tmp_path, tokenizer):
    def write(name: str, base: int, n: int) -> str:
        with MDSWriter(out=str(tmp_path / name), columns={'tokens': 'ndarray:int32'}) as writer:
            for i in range(n):
                writer.write({'tokens': np.full(L, base + i, np.int32)})
        return str(tmp_path / name)

    a, b = write('a', 0, 40), write('b', 100, 10)

    def counts(streams: dict) -> Counter:
        rows = _rows(_loader(tokenizer, streams=streams, shuffle=True, num_canonical_nodes=1))
        return Counter('a' if row[0] < 100 else 'b' for row in rows)

    assert counts({'a': {'local': a}, 'b': {'local': b, 'repeat': 3}}) == {'a': 40, 'b': 30}
    assert counts({'a': {'local': a, 'choose': 8}, 'b': {'local': b}}) == {'a': 8, 'b': 10}
    assert counts({'a': {'local': a, 'proportion': 0.5}, 'b': {'local': b, 'proportion': 0.5}}) == {'a': 25, 'b': 25}
