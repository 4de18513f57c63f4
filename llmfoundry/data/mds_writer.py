"""MDS datasets written with numpy and the compression libraries only (no torch, transformers or streaming).

The files are byte-identical to mosaicml-streaming 0.13's `MDSWriter` for the same columns, compression,
hashes and size_limit (gzip aside: its header has no timestamp here, so reruns give the same bytes), and
`merge_indexes` gives the index.json of streaming's `merge_index` over local sub-datasets. Importing
streaming costs seconds (it imports torch and transformers); a conversion should start converting at once.

Shard `shard.NNNNN.mds` (`.mds.<ext>` when compressed; only the compressed file is kept):
    uint32 sample count | uint32 offsets (count + 1, from the file start) | config JSON | samples
A sample is the uint32 byte sizes of its variable-size columns, then every column's bytes, columns sorted by
name. A shard is closed before a sample that would take it past size_limit (counting 4 bytes per sample for
its offset and the header), like streaming; streaming then also writes an empty shard when the very first
sample of a shard alone exceeds the limit, and so does this writer.

Remote output: `on_file` is called with each finished shard file, then with index.json last, so the caller
can upload shard by shard and make the dataset visible only once it is whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterable
from decimal import Decimal
from types import TracebackType
from typing import Any

import numpy as np

INDEX_FILE = 'index.json'
DEFAULT_SIZE_LIMIT = 1 << 26  # streaming's default

# family -> (default level, allowed levels); snappy has no levels. Names as streaming spells them.
_COMPRESSION_LEVELS: dict[str, tuple[int | None, range]] = {
    'br': (11, range(12)),
    'bz2': (9, range(1, 10)),
    'gz': (9, range(10)),
    'snappy': (None, range(0)),
    'zstd': (3, range(1, 23)),
}
_COMPRESSION_PACKAGES = {'br': 'brotli', 'snappy': 'python-snappy', 'zstd': 'zstd'}

# Fixed-size numpy scalars, and the dtypes an `ndarray` column may hold (streaming's one-byte dtype codes).
_SCALARS = ('uint8', 'uint16', 'uint32', 'uint64', 'int8', 'int16', 'int32', 'int64', 'float16', 'float32',
            'float64')  # fmt: skip
_NDARRAY_DTYPES = {'uint8': 8, 'int8': 9, 'uint16': 16, 'int16': 17, 'float16': 18, 'uint32': 32, 'int32': 33,
                   'float32': 34, 'uint64': 64, 'int64': 65, 'float64': 66}  # fmt: skip
_VARIABLE = ('bytes', 'str', 'str_int', 'str_float', 'str_decimal', 'json', 'pkl')
_IMAGES = ('pil', 'jpeg', 'png', 'jpeg_array', 'jpegarray', 'list[pil]', 'list[jpeg]', 'list[png]')

_SIZE_UNITS = {'kb': 1 << 10, 'mb': 1 << 20, 'gb': 1 << 30, 'tb': 1 << 40, 'pb': 1 << 50, 'eb': 1 << 60}


class MDSFormatError(ValueError):
    """A column encoding, compression, hash or size limit this writer cannot use; the message says which."""


def compressions() -> list[str]:
    """Every compression name accepted (streaming's: 'zstd', 'zstd:1' .. 'zstd:22', 'gz:9', 'snappy', ...)."""
    names = []
    for family, (_, levels) in _COMPRESSION_LEVELS.items():
        names += [family] + [f'{family}:{level}' for level in levels]
    return names


def compressor(compression: str) -> tuple[str, Callable[[bytes], bytes]]:
    """(file extension, compress function) for `compression`; the library is imported here, only when used."""
    family, _, level_text = compression.partition(':')
    if compression not in compressions():
        raise MDSFormatError(
            f"unknown compression '{compression}': use one of {', '.join(_COMPRESSION_LEVELS)}, optionally with a "
            'level (e.g. zstd:7)'
        )
    level = int(level_text) if level_text else _COMPRESSION_LEVELS[family][0]
    try:
        if family == 'zstd':
            import zstd

            return family, lambda data: zstd.compress(data, level)
        if family == 'br':
            import brotli

            return family, lambda data: brotli.compress(data, quality=level)
        if family == 'snappy':
            import snappy

            return family, snappy.compress
    except ImportError as err:
        raise MDSFormatError(
            f"compression '{compression}' needs the {_COMPRESSION_PACKAGES[family]} package: "
            f'pip install {_COMPRESSION_PACKAGES[family]}'
        ) from err
    if family == 'bz2':
        import bz2

        return family, lambda data: bz2.compress(data, level)
    import gzip

    return family, lambda data: gzip.compress(data, level, mtime=0)


def _hasher(algo: str) -> Callable[[bytes], Any]:
    if algo in hashlib.algorithms_available and hasattr(hashlib, algo) and not algo.startswith('shake_'):
        return getattr(hashlib, algo)
    if algo.startswith('xxh'):
        try:
            import xxhash
        except ImportError as err:
            raise MDSFormatError(f"hash '{algo}' needs the xxhash package: pip install xxhash") from err
        if algo in xxhash.algorithms_available:
            return getattr(xxhash, algo)
    raise MDSFormatError(f"unknown hash '{algo}': use a hashlib algorithm (sha1, md5, ...) or an xxhash one (xxh64)")


def size_limit_bytes(size_limit: int | str | None) -> int | None:
    """Bytes from an int or a string like '100kb' / '64mb' (units of 1024); None or 0: no limit."""
    if not size_limit:
        return None
    if isinstance(size_limit, str):
        text = size_limit.lower().strip()
        unit = next((u for u in _SIZE_UNITS if text.endswith(u)), None)
        try:
            value = int(float(text[:-2]) * _SIZE_UNITS[unit]) if unit else int(text.removesuffix('b'))
        except ValueError:
            raise MDSFormatError(f"size_limit '{size_limit}' is not a size: use bytes or e.g. '64mb'") from None
    else:
        value = int(size_limit)
    if not 0 <= value < 1 << 32:
        raise MDSFormatError(f'size_limit must be between 0 and 2**32 - 1 (offsets are uint32), got {value}')
    return value or None


class _Column:
    """One column's encoder: `size` is its fixed byte size, or None when each sample stores its size."""

    def __init__(self, name: str, encoding: str) -> None:
        self.name, self.encoding = name, encoding
        kind, _, config = encoding.partition(':')
        self.size: int | None = None
        self.dtype: str | None = None
        self.shape: tuple[int, ...] | None = None
        if kind == 'ndarray':
            self._parse_ndarray(config)
        elif config or kind not in _SCALARS + _VARIABLE + ('int',):
            hint = " (image encodings need mosaicml-streaming's MDSWriter)" if encoding in _IMAGES else ''
            raise MDSFormatError(
                f"column '{name}': unsupported encoding '{encoding}'{hint}; use one of "
                f'{", ".join(("int", "ndarray[:dtype[:shape]]") + _VARIABLE + _SCALARS)}'
            )
        elif kind == 'int':
            self.size = 8
        elif kind in _SCALARS:
            self.size = np.dtype(kind).itemsize
        self.kind = kind

    def _parse_ndarray(self, config: str) -> None:
        args = config.split(':') if config else []
        if len(args) > 2 or (args and args[0] not in _NDARRAY_DTYPES):
            raise MDSFormatError(
                f"column '{self.name}': bad encoding '{self.encoding}': use ndarray, ndarray:DTYPE or "
                f'ndarray:DTYPE:D1,D2,.. with DTYPE one of {", ".join(_NDARRAY_DTYPES)}'
            )
        self.dtype = args[0] if args else None
        if len(args) == 2:
            try:
                self.shape = tuple(int(d) for d in args[1].split(','))
            except ValueError:
                self.shape = ()
            if not self.shape or min(self.shape) < 1:
                raise MDSFormatError(f"column '{self.name}': bad shape in '{self.encoding}': positive ints, e.g. 4,2")
            self.size = int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bytes):  # streaming stores bytes as given, whatever the encoding
            return value
        kind = self.kind
        if kind == 'ndarray':
            return self._encode_ndarray(value)
        if kind in _SCALARS:
            return np.dtype(kind).type(value).tobytes()
        if kind == 'int':
            return np.int64(self._check(value, int)).tobytes()
        if kind == 'json':
            text = json.dumps(value.tolist() if isinstance(value, np.ndarray) else value)
            return text.encode('utf-8')
        if kind == 'pkl':
            return pickle.dumps(value)
        expected = {'bytes': bytes, 'str': str, 'str_int': int, 'str_float': float, 'str_decimal': Decimal}[kind]
        return str(self._check(value, expected)).encode('utf-8')

    def _check(self, value: Any, expected: type) -> Any:
        if not isinstance(value, expected):
            raise TypeError(f"column '{self.name}' ({self.encoding}) needs {expected.__name__}, got {type(value)}")
        return value

    def _encode_ndarray(self, value: np.ndarray) -> bytes:
        self._check(value, np.ndarray)
        code = _NDARRAY_DTYPES.get(value.dtype.name)
        if code is None or (self.dtype is not None and value.dtype.name != self.dtype):
            raise TypeError(f"column '{self.name}' ({self.encoding}): arrays of dtype {value.dtype.name} not allowed")
        if value.size == 0:
            raise ValueError(f"column '{self.name}': an empty array cannot be stored")
        parts = [] if self.dtype is not None else [bytes([code])]
        if self.shape is None:
            shape = np.array(value.shape, np.int64)
            if not 1 <= len(shape) < 64:
                raise ValueError(f"column '{self.name}': arrays need 1 to 63 axes, got {len(shape)}")
            largest = int(shape.max())
            width = next((i for i, bits in enumerate((8, 16, 32)) if largest < 1 << bits), 3)  # uint8 .. uint64
            parts += [bytes([(len(shape) << 2) | width]), shape.astype(f'uint{8 << width}').tobytes()]
        elif value.shape != self.shape:
            raise ValueError(f"column '{self.name}': expected shape {self.shape}, got {value.shape}")
        parts.append(value.tobytes())
        return b''.join(parts)


class MDSWriter:
    """Write samples (dicts of column -> value) into shards plus index.json in the local folder `out`.

    `out` must be empty or absent. `on_file(path)` is called with each finished shard, then index.json last;
    with `keep_local=False` each file is deleted once `on_file` returns. Use as a context manager, or call
    `finish()`: a `with` block that raises writes no index.json.
    """

    def __init__(
        self, out: str | os.PathLike[str], columns: dict[str, str], compression: str | None = None,
        hashes: Iterable[str] | None = None, size_limit: int | str | None = DEFAULT_SIZE_LIMIT,
        on_file: Callable[[str], None] | None = None, keep_local: bool = True,
    ) -> None:  # fmt: skip
        self.out = os.fspath(out)
        if os.path.isdir(self.out) and os.listdir(self.out):
            raise FileExistsError(f"MDS output folder '{self.out}' is not empty; remove it or choose another")
        self.compression = compression or None
        self._compress = compressor(self.compression) if self.compression else None
        self.hashes = list(hashes or [])
        if self.hashes != sorted(self.hashes):
            raise MDSFormatError(f'hashes must be in sorted order (as streaming requires): {sorted(self.hashes)}')
        self._hashers = [(algo, _hasher(algo)) for algo in self.hashes]
        self.size_limit = size_limit_bytes(size_limit)
        self._columns = [_Column(name, columns[name]) for name in sorted(columns)]
        self.on_file = on_file
        self.keep_local = keep_local
        self.shards: list[dict[str, Any]] = []
        self._config = {
            'version': 2, 'format': 'mds', 'compression': self.compression, 'hashes': self.hashes,
            'size_limit': self.size_limit, 'column_names': [c.name for c in self._columns],
            'column_encodings': [c.encoding for c in self._columns], 'column_sizes': [c.size for c in self._columns],
        }  # fmt: skip
        self._config_bytes = json.dumps(self._config, sort_keys=True).encode('utf-8')
        self._samples: list[bytes] = []
        self._shard_bytes = self._empty_shard_bytes()
        os.makedirs(self.out, exist_ok=True)

    def _empty_shard_bytes(self) -> int:
        return 4 + 4 + len(self._config_bytes)  # sample count, first offset, config

    def encode_sample(self, sample: dict[str, Any]) -> bytes:
        sizes, data = [], []
        for column in self._columns:
            if column.name not in sample:
                raise KeyError(f"sample has no column '{column.name}' (it has {sorted(sample)})")
            datum = column.encode(sample[column.name])
            if column.size is None:
                sizes.append(len(datum))
            elif len(datum) != column.size:
                raise ValueError(
                    f"column '{column.name}' ({column.encoding}) takes {column.size} bytes, got {len(datum)}"
                )
            data.append(datum)
        return np.array(sizes, np.uint32).tobytes() + b''.join(data)

    def write(self, sample: dict[str, Any]) -> None:
        encoded = self.encode_sample(sample)
        size = len(encoded) + 4  # + its offset
        if self.size_limit and self.size_limit < self._shard_bytes + size:
            self._flush()
        self._samples.append(encoded)
        self._shard_bytes += size

    def _file_info(self, data: bytes, basename: str) -> dict[str, Any]:
        hashes = {algo: hasher(data).hexdigest() for algo, hasher in self._hashers}
        return {'basename': basename, 'bytes': len(data), 'hashes': hashes}

    def _flush(self) -> None:
        count = len(self._samples)
        offsets = np.array([0] + [len(s) for s in self._samples]).cumsum().astype(np.uint32)
        offsets += 4 + 4 * (count + 1) + len(self._config_bytes)
        raw = b''.join([np.uint32(count).tobytes(), offsets.tobytes(), self._config_bytes, *self._samples])
        raw_name = f'shard.{len(self.shards):05}.mds'
        raw_info, zip_info, data, name = self._file_info(raw, raw_name), None, raw, raw_name
        if self._compress is not None:
            extension, compress = self._compress
            data, name = compress(raw), f'{raw_name}.{extension}'
            zip_info = self._file_info(data, name)
        with open(os.path.join(self.out, name), 'wb') as f:
            f.write(data)
        self.shards.append({'samples': count, 'raw_data': raw_info, 'zip_data': zip_info, **self._config})
        self._samples, self._shard_bytes = [], self._empty_shard_bytes()
        self._publish(name)

    def _publish(self, name: str) -> None:
        if self.on_file is None:
            return
        path = os.path.join(self.out, name)
        self.on_file(path)
        if not self.keep_local:
            os.remove(path)

    def finish(self) -> None:
        """Write the last shard, then index.json (the file that makes the dataset readable) last."""
        if self._samples:
            self._flush()
        with open(os.path.join(self.out, INDEX_FILE), 'w') as f:
            json.dump({'version': 2, 'shards': self.shards}, f, sort_keys=True)
        self._publish(INDEX_FILE)

    def __enter__(self) -> MDSWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.finish()


def merge_indexes(parts: Iterable[tuple[str, str]]) -> str:
    """The merged index.json text over sub-datasets, from (sub-folder name, that folder's index.json text).

    Shard basenames become `<sub-folder>/<basename>`, as streaming's `merge_index` writes them.
    """
    shards = []
    for folder, text in parts:
        for shard in json.loads(text)['shards']:
            for key in ('raw_data', 'zip_data', 'raw_meta', 'zip_meta'):
                if shard.get(key):
                    shard[key]['basename'] = f'{folder}/{shard[key]["basename"]}'
            shards.append(shard)
    return json.dumps({'version': 2, 'shards': shards})
