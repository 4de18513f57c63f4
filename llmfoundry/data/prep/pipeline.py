"""The conversion every data-prep command shares: documents -> (tokens -> rows) -> one MDS dataset."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np

from llmfoundry.data.errors import DataError
from llmfoundry.data.prep.encoding import DocumentEncoder, TokenizeSpec
from llmfoundry.data.prep.output import DEFAULT_SHARD_SIZE, MDSOutput
from llmfoundry.data.prep.packing import TokenPacker
from llmfoundry.data.prep.progress import Stats

DOCS_PER_BATCH = 256  # big enough for the Rust batch encoder to pay off, small enough to stream


@dataclass(frozen=True)
class ConvertSpec:
    """What to write. `concat_tokens` None: a `text: str` column, else rows of `tokens: ndarray:int32`."""

    concat_tokens: int | None = None
    tokenize: TokenizeSpec | None = None
    no_wrap: bool = False
    compression: str | None = None
    size_limit: int = DEFAULT_SHARD_SIZE

    def __post_init__(self) -> None:
        if self.concat_tokens is not None:
            if self.concat_tokens <= 0:
                raise DataError(f'--concat_tokens must be positive, got {self.concat_tokens}')
            if self.tokenize is None:
                raise DataError('--concat_tokens needs --tokenizer')

    @property
    def columns(self) -> dict[str, str]:
        return {'tokens': 'ndarray:int32'} if self.concat_tokens else {'text': 'str'}


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


_worker_encoder: DocumentEncoder | None = None


def _init_worker(spec: TokenizeSpec) -> None:
    global _worker_encoder
    _worker_encoder = DocumentEncoder.from_spec(spec)


def _encode_in_worker(docs: list[str]) -> list[np.ndarray]:
    assert _worker_encoder is not None
    return _worker_encoder.encode(docs)


def _encoded_batches(batches: Iterator[list[str]], spec: TokenizeSpec, num_workers: int) -> Iterator[list[np.ndarray]]:
    """Encoded batches in input order; with workers, a bounded window of batches is in flight.

    A ProcessPoolExecutor, not multiprocessing.Pool: a worker that dies (OOM, kill) raises
    BrokenProcessPool here instead of hanging forever on a lost task.
    """
    if num_workers <= 1:
        encoder = DocumentEncoder.from_spec(spec)
        yield from map(encoder.encode, batches)
        return
    with ProcessPoolExecutor(num_workers, initializer=_init_worker, initargs=(spec,)) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.submit(_encode_in_worker, batch))
            if len(pending) >= 2 * num_workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _samples(
    docs: Iterable[str], spec: ConvertSpec, stats: Stats, num_workers: int, report: Callable[[Stats], None]
) -> Iterator[dict]:
    if spec.concat_tokens is None:
        for doc in docs:
            stats.documents += 1
            if stats.documents % DOCS_PER_BATCH == 0:
                report(stats)
            yield {'text': doc}
        return
    packer = TokenPacker(spec.concat_tokens, wrap=not spec.no_wrap)
    for encoded in _encoded_batches(_batched(docs, DOCS_PER_BATCH), spec.tokenize, num_workers):
        for tokens in encoded:
            stats.documents += 1
            stats.tokens += len(tokens)
            for row in packer.add(tokens):
                yield {'tokens': row}
        report(stats)


def write_documents(
    docs: Iterable[str],
    dest: str,
    spec: ConvertSpec,
    num_workers: int = 0,
    report: Callable[[Stats], None] = lambda stats: None,
    source: str | None = None,
) -> Stats:
    """Convert `docs` into one MDS dataset at `dest` (local path or URL); returns the counts.

    Tokens are counted as written into the packer (documents' tokens incl. BOS/EOS text), so a
    trailing partial row still counts; `samples` is what the dataset holds. `source` names the input in errors.
    """
    stats = Stats()
    output = MDSOutput(dest, spec.columns, spec.compression, spec.size_limit)
    with output as writer:
        for sample in _samples(docs, spec, stats, num_workers, report):
            writer.write(sample)
            stats.samples += 1
        if stats.documents == 0:
            raise DataError(f'{source or "the input"} holds no documents')
        if stats.samples == 0:
            where = f'{source}: ' if source else ''
            raise DataError(
                f'{where}{stats.documents} documents gave {stats.tokens} tokens: not one full row of '
                f'--concat_tokens {spec.concat_tokens}'
            )
    stats.shards = output.num_shards
    report(stats)
    return stats
