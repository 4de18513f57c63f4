"""The tokenizer files that travel with an exported or imported model, copied verbatim."""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = (
    'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json', 'vocab.json',
    'merges.txt', 'vocab.txt', 'tokenizer.model', 'spiece.model', 'chat_template.jinja', 'chat_template.json',
)


def has_tokenizer(folder: str | Path) -> bool:
    return any((Path(folder) / name).is_file() for name in ('tokenizer.json', 'tokenizer_config.json',
                                                              'tokenizer.model'))


def copy_tokenizer_files(src: str | Path, dst: Path) -> None:
    """Copy the tokenizer files found in `src` verbatim (byte-identical tokenization, no re-serialisation)."""
    if not has_tokenizer(src):
        raise FileNotFoundError(f'{src}: no tokenizer files (tokenizer.json, tokenizer_config.json, tokenizer.model).')
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, dst / name)
