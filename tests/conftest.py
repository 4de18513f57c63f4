"""Suite-wide settings: offline hub, gpu marker auto-skip, one thread for tiny-model tests, shared inputs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('WANDB_MODE', 'offline')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason='needs a CUDA device')
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip_gpu)


# Tests of tiny models run fastest on one intra-op thread, which also avoids thread spin on a busy machine.
ONE_THREAD_FOLDERS = ('export', 'inference')


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.path.parent.name not in ONE_THREAD_FOLDERS and 'one_thread' not in request.keywords:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----- session-wide inputs: a real text+code corpus and a tokenizer trained on it ----------------------
CORPUS_BYTES = 300_000  # a few hundred KB keeps the suite fast on 2 cores
MAX_FILE_BYTES = 40_000
VOCAB_SIZE = 800


@pytest.fixture(scope='session')
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of .txt files, one stdlib module each (code with English docstrings and comments)."""
    out = tmp_path_factory.mktemp('corpus')
    from llmfoundry.data.stdlib_corpus import stdlib_sources

    for path in stdlib_sources(CORPUS_BYTES, MAX_FILE_BYTES):
        (out / f'{path.stem}.txt').write_text(path.read_text(encoding='utf-8'), encoding='utf-8')
    return out


@pytest.fixture(scope='session')
def tokenizer_dir(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A byte-level BPE trained once per session with our own `llmfoundry tokenizer train`."""
    from llmfoundry.data.tokenizer_cli import main

    out = str(tmp_path_factory.mktemp('tokenizer'))
    assert main(['train', '--input', str(corpus_dir), '--vocab-size', str(VOCAB_SIZE), '--out', out]) == 0
    return out


@pytest.fixture(scope='session')
def s3_server():
    """One real S3 server (SeaweedFS on 127.0.0.1) per session, with the bucket TEST_BUCKET created."""
    from s3_server import TEST_BUCKET, S3Server

    with S3Server() as server:
        server.create_bucket(TEST_BUCKET)
        yield server
