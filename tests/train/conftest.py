"""Inputs shared by the training tests: MDS shards of the session corpus (train and val splits)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmfoundry.data.prep.cli import main as data_prep


@pytest.fixture(scope='session')
def mds_dir(corpus_dir: Path, tokenizer_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """{train,val}/ MDS folders of 64-token samples, made once per session with our own data-prep command."""
    out = tmp_path_factory.mktemp('mds')
    assert data_prep(['convert_text_to_mds', '--input_folder', str(corpus_dir), '--output_folder', str(out / 'train'),
                      '--concat_tokens', '64', '--tokenizer', tokenizer_dir, '--eos_text', '<|endoftext|>']) == 0
    shutil.copytree(out / 'train', out / 'val')
    return out
