"""Load a Hugging Face tokenizer from a `tokenizer: {name, kwargs}` config section.

`name` is a hub id, a local folder, or a folder on object storage (any URL `llmfoundry.storage` reads, e.g.
s3://bucket/tokenizer): that one is downloaded to a private temporary folder, loaded, and the copy deleted
(fast_tokenizer.downloaded_tokenizer).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from llmfoundry import storage

from .fast_tokenizer import downloaded_tokenizer

log = logging.getLogger(__name__)

_PATH_PREFIXES = ('/', './', '../', '~', '.' + os.sep)


def looks_like_path(name: str) -> bool:
    """A name that can only be a folder (never a hub id such as 'EleutherAI/gpt-neox-20b')."""
    return name.startswith(_PATH_PREFIXES) or name in ('.', '..')


def build_tokenizer(name: str, kwargs: dict[str, Any] | None = None) -> PreTrainedTokenizerBase:
    """Load `name` (hub id, local folder or remote folder URL) with `kwargs` (e.g. model_max_length) passed through.

    Pretraining packs documents separated by EOS, so a tokenizer without an EOS token is an error.
    A tokenizer without a pad token gets its EOS token as pad token; loaders mask padding through
    `attention_mask`, never by comparing ids, so this is safe.
    """
    kwargs = dict(kwargs or {})
    if storage.is_remote(name):
        with downloaded_tokenizer(name, key='tokenizer.name') as local:
            return load_from(name, local, kwargs)
    path = os.path.expanduser(name.removeprefix('file://'))
    if os.path.isdir(path):
        return load_from(name, path, kwargs)
    if looks_like_path(name) or os.path.exists(path):
        raise FileNotFoundError(f"tokenizer folder '{name}' does not exist (or is not a folder)")
    return load_from(name, name, kwargs)


def load_from(name: str, source: str, kwargs: dict[str, Any]) -> PreTrainedTokenizerBase:
    """AutoTokenizer.from_pretrained(source), checked for EOS and given a pad token; errors name `name`."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as err:
        offline = ' (HF_HUB_OFFLINE is set: only local folders and cached hub tokenizers load)' if (
            os.environ.get('HF_HUB_OFFLINE', '') not in ('', '0')) else ''
        raise OSError(f"could not load tokenizer '{name}'{offline}: {err}") from err
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"tokenizer '{name}' has no EOS token; pretraining needs one to separate documents. "
            "Pass one via tokenizer kwargs, e.g. {eos_token: '<|endoftext|>'}."
        )
    if tokenizer.pad_token_id is None:
        log.info('tokenizer %s has no pad token; using its EOS token %r for padding', name, tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
