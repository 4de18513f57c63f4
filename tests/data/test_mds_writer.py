"""llmfoundry.data.mds_writer against mosaicml-streaming 0.13: the same bytes, the same merged index, readable."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from llmfoundry.data.mds_writer import MDSFormatError, MDSWriter, merge_indexes


def _rows(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 50_000, size=int(rng.integers(1, 60)), dtype=np.int32) for _ in range(n)]


def _texts(n: int) -> list[str]:
    words = ['def', 'return', 'héllo', 'naïve', '日本語', '🙂', '', '\n', 'x = 1']
    return [' '.join(words[(i * 7 + j) % len(words)] for j in range(i % 23)) for i in range(n)]


def _turns(i: int) -> list[dict]:
    return [{'input_ids': list(range(i % 5 + 1)), 'labels': [i, i + 1]} for _ in range(1 + i % 3)]


# Each case: columns, samples, compression, hashes, size_limit.
CASES = {
    'tokens-none-shards': ({'tokens': 'ndarray:int32'}, [{'tokens': r} for r in _rows(300)], None, None, 2000),
    'text-zstd-shards': ({'text': 'str'}, [{'text': t} for t in _texts(300)], 'zstd', None, 1500),
    'turns-zstd7-hashes': (
        {'turns': 'json'}, [{'turns': _turns(i)} for i in range(200)], 'zstd:7', ['sha1', 'xxh64'], 3000),
    'prompt-response-bz2': (
        {'prompt': 'str', 'response': 'str'},
        [{'prompt': t, 'response': t[::-1]} for t in _texts(120)], 'bz2:3', ['md5'], 2500),
    'messages-br': (
        {'messages': 'json'},
        [{'messages': [{'role': 'user', 'content': t}, {'role': 'assistant', 'content': 'ok'}]} for t in _texts(80)],
        'br:5', None, None),
    'mixed-snappy': (
        {'a_int': 'int', 'b_f32': 'float32', 'c_u16': 'ndarray:uint16:2,3', 'd_any': 'ndarray', 'e_raw': 'bytes',
         'f_pkl': 'pkl', 'g_strint': 'str_int', 'h_dec': 'str_decimal', 'i_u8': 'uint8'},
        [{'a_int': i - 50, 'b_f32': i / 3, 'c_u16': np.full((2, 3), i, np.uint16), 'e_raw': bytes([i % 256]) * i,
          'd_any': np.arange(1 + i % 300, dtype=np.float64 if i % 2 else np.int8).reshape(-1, 1),
          'f_pkl': {'i': i}, 'g_strint': i * 10**20, 'h_dec': Decimal(i) / 7, 'i_u8': i % 256} for i in range(100)],
        'snappy', None, '4kb'),
    # Samples bigger than the limit: streaming then writes an empty shard before each; so must we.
    'oversized-samples': ({'tokens': 'ndarray:int32'}, [{'tokens': r} for r in _rows(6, seed=1)], None, None, 60),
}  # fmt: skip


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize('case', list(CASES))
def test_same_bytes_as_streaming(case: str, tmp_path: Path) -> None:
    from streaming import MDSWriter as StreamingMDSWriter

    columns, samples, compression, hashes, size_limit = CASES[case]
    with MDSWriter(tmp_path / 'ours', columns, compression, hashes, size_limit) as ours:
        for sample in samples:
            ours.write(sample)
    with StreamingMDSWriter(out=str(tmp_path / 'ref'), columns=columns, compression=compression, hashes=hashes,
                            size_limit=size_limit) as ref:  # fmt: skip
        for sample in samples:
            ref.write(sample)
    ours_files, ref_files = _files(tmp_path / 'ours'), _files(tmp_path / 'ref')
    assert list(ours_files) == list(ref_files)
    for name in ref_files:
        assert ours_files[name] == ref_files[name], name
    if case in ('tokens-none-shards', 'text-zstd-shards', 'mixed-snappy'):
        assert len(ours.shards) >= 3
    if case == 'oversized-samples':
        assert [s['samples'] for s in ours.shards][:2] == [0, 1]


def test_merged_index_same_as_streaming_and_readable(tmp_path: Path) -> None:
    """Three sub-datasets merged by merge_indexes == streaming's merge_index; StreamingDataset reads every sample."""
    from streaming import StreamingDataset
    from streaming.base.util import merge_index

    rows = _rows(90)
    parts = []
    for g in range(3):
        folder = tmp_path / 'ds' / f'group_{g:05d}'
        with MDSWriter(folder, {'tokens': 'ndarray:int32'}, 'zstd', size_limit=1000) as writer:
            for row in rows[g * 30 : (g + 1) * 30]:
                writer.write({'tokens': row})
        parts.append((folder.name, (folder / 'index.json').read_text()))
    ref = tmp_path / 'ref'
    merge_index([str(tmp_path / 'ds' / name / 'index.json') for name, _ in parts], str(ref))
    merged = merge_indexes(parts)
    assert merged == (ref / 'index.json').read_text()
    (tmp_path / 'ds' / 'index.json').write_text(merged)

    dataset = StreamingDataset(local=str(tmp_path / 'ds'), batch_size=1, shuffle=False)
    assert len(dataset) == 90
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(dataset[i]['tokens'], row)


def test_on_file_gets_shards_then_index_and_keep_local(tmp_path: Path) -> None:
    seen: list[tuple[str, bytes]] = []
    out = tmp_path / 'out'
    writer = MDSWriter(out, {'text': 'str'}, size_limit=400, keep_local=False,
                       on_file=lambda path: seen.append((Path(path).name, Path(path).read_bytes())))  # fmt: skip
    texts = _texts(40)
    for text in texts:
        writer.write({'text': text})
    writer.finish()
    names = [name for name, _ in seen]
    assert names == [f'shard.{i:05}.mds' for i in range(len(writer.shards))] + ['index.json']
    assert len(writer.shards) >= 3 and list(out.iterdir()) == []  # each file removed after its callback
    index = json.loads(seen[-1][1])
    assert sum(s['samples'] for s in index['shards']) == 40
    assert [s['raw_data']['bytes'] for s in index['shards']] == [len(data) for _, data in seen[:-1]]


def test_failed_block_writes_no_index(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), MDSWriter(tmp_path / 'out', {'text': 'str'}) as writer:
        writer.write({'text': 'a'})
        raise RuntimeError('boom')
    assert not (tmp_path / 'out' / 'index.json').exists()


@pytest.mark.parametrize(
    ('columns', 'kwargs', 'sample', 'match'),
    [
        ({'t': 'str'}, {'compression': 'lz4'}, None, "unknown compression 'lz4'"),
        ({'t': 'str'}, {'compression': 'zstd:30'}, None, "unknown compression 'zstd:30'"),
        ({'t': 'str'}, {'hashes': ['sha1', 'md5']}, None, 'sorted order'),
        ({'t': 'str'}, {'hashes': ['nohash']}, None, "unknown hash 'nohash'"),
        ({'t': 'str'}, {'size_limit': 1 << 32}, None, 'size_limit must be'),
        ({'img': 'jpeg'}, {}, None, "column 'img'.*image encodings need mosaicml-streaming"),
        ({'x': 'ndarray:int31'}, {}, None, "column 'x': bad encoding 'ndarray:int31'"),
        ({'x': 'ndarray:int32:2,0'}, {}, None, "column 'x': bad shape"),
        ({'x': 'ndarray:int32'}, {}, {'x': np.zeros(3, np.int64)}, "column 'x'.*dtype int64 not allowed"),
        ({'x': 'ndarray:int32:2'}, {}, {'x': np.zeros(3, np.int32)}, r"column 'x': expected shape \(2,\)"),
        ({'t': 'str'}, {}, {'t': 3}, "column 't' \\(str\\) needs str"),
        ({'t': 'str'}, {}, {'u': 'a'}, "sample has no column 't'"),
        ({'n': 'int32'}, {}, {'n': b'\x00'}, "column 'n' \\(int32\\) takes 4 bytes, got 1"),
    ],
)  # fmt: skip
def test_bad_settings_and_samples_say_what_to_change(
    columns: dict, kwargs: dict, sample: dict | None, match: str, tmp_path: Path
) -> None:
    if sample is None:
        with pytest.raises(MDSFormatError, match=match):
            MDSWriter(tmp_path / 'out', columns, **kwargs)
        return
    writer = MDSWriter(tmp_path / 'out', columns, **kwargs)
    with pytest.raises((TypeError, ValueError, KeyError), match=match):
        writer.write(sample)


def test_refuses_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / 'stale.txt').write_text('x')
    with pytest.raises(FileExistsError, match='is not empty'):
        MDSWriter(tmp_path, {'t': 'str'})


IMPORT_PROBE = """
import sys, numpy as np
from llmfoundry.data.mds_writer import MDSWriter
with MDSWriter(sys.argv[1], {'tokens': 'ndarray:int32', 'text': 'str'}, 'zstd', ['sha1']) as w:
    w.write({'tokens': np.arange(5, dtype=np.int32), 'text': 'a'})
print(sorted(m for m in ('torch', 'transformers', 'streaming') if m in sys.modules))
"""


def test_fresh_interpreter_imports_no_torch_transformers_streaming(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, '-c', IMPORT_PROBE, str(tmp_path / 'out')], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '[]'
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['index.json', 'shard.00000.mds.zstd']
