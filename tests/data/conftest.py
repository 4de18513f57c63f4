"""Session-wide inputs for the data tests: a small stdlib corpus, a tokenizer trained on it, S3."""

from __future__ import annotations

import json
import os
import sysconfig
import uuid
from pathlib import Path

import pytest
from s3_server import S3Server

CORPUS_BYTES = 300_000  # a few hundred KB keeps the suite fast on 2 cores
MAX_FILE_BYTES = 40_000
VOCAB_SIZE = 800
BUCKET = 'llmfoundry-data-tests'


def stdlib_files(total_bytes: int, max_file_bytes: int) -> list[Path]:
    """Top-level stdlib modules in name order, smaller than max_file_bytes, up to total_bytes."""
    root = Path(sysconfig.get_paths()['stdlib'])
    chosen, size = [], 0
    for path in sorted(root.glob('*.py')):
        n = path.stat().st_size
        if 200 < n <= max_file_bytes:
            chosen.append(path)
            size += n
            if size >= total_bytes:
                break
    return chosen


@pytest.fixture(scope='session')
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of .txt files, one stdlib module each (text and code with English prose)."""
    out = tmp_path_factory.mktemp('corpus')
    for path in stdlib_files(CORPUS_BYTES, MAX_FILE_BYTES):
        (out / f'{path.stem}.txt').write_text(path.read_text(encoding='utf-8'), encoding='utf-8')
    return out


@pytest.fixture(scope='session')
def corpus_docs(corpus_dir: Path) -> list[str]:
    return [p.read_text(encoding='utf-8') for p in sorted(corpus_dir.glob('*.txt'))]


@pytest.fixture(scope='session')
def corpus_jsonl(corpus_docs: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('jsonl') / 'corpus.jsonl'
    path.write_text(''.join(json.dumps({'text': d}) + '\n' for d in corpus_docs), encoding='utf-8')
    return path


@pytest.fixture(scope='session')
def tokenizer_dir(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A byte-level BPE trained once per session with our own `llmfoundry tokenizer train`."""
    from llmfoundry.data.tokenizer_cli import main

    out = str(tmp_path_factory.mktemp('tokenizer'))
    assert main(['train', '--input', str(corpus_dir), '--vocab-size', str(VOCAB_SIZE), '--out', out]) == 0
    return out


@pytest.fixture(scope='session')
def tokenizer(tokenizer_dir: str):
    from llmfoundry.data.tokenizers import build_tokenizer

    return build_tokenizer(tokenizer_dir)


@pytest.fixture(scope='session')
def s3_server():
    with S3Server() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def s3_prefix(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty s3:// prefix on the session's server, with the environment pointing at it."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return f's3://{BUCKET}/{uuid.uuid4().hex[:12]}'


@pytest.fixture
def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: offline, single-threaded tokenizers, repo importable."""
    repo = str(Path(__file__).resolve().parents[2])
    return {**os.environ, 'PYTHONPATH': repo, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1',
            'TOKENIZERS_PARALLELISM': 'false'}
