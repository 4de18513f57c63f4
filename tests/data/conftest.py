"""Inputs for the data tests beyond tests/conftest.py's corpus and tokenizer: JSONL, a loaded tokenizer, S3."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from s3_server import TEST_BUCKET, S3Server


@pytest.fixture(scope='session')
def corpus_docs(corpus_dir: Path) -> list[str]:
    return [p.read_text(encoding='utf-8') for p in sorted(corpus_dir.glob('*.txt'))]


@pytest.fixture(scope='session')
def corpus_jsonl(corpus_docs: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('jsonl') / 'corpus.jsonl'
    path.write_text(''.join(json.dumps({'text': d}) + '\n' for d in corpus_docs), encoding='utf-8')
    return path


@pytest.fixture(scope='session')
def tokenizer(tokenizer_dir: str):
    from llmfoundry.data.tokenizers import build_tokenizer

    return build_tokenizer(tokenizer_dir)


@pytest.fixture
def s3_prefix(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty s3:// prefix on the session's server, with the environment pointing at it."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return f's3://{TEST_BUCKET}/data/{uuid.uuid4().hex[:12]}'


@pytest.fixture
def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: offline, single-threaded tokenizers, repo importable."""
    repo = str(Path(__file__).resolve().parents[2])
    return {**os.environ, 'PYTHONPATH': repo, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1',
            'TOKENIZERS_PARALLELISM': 'false'}
