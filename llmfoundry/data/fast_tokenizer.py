"""Tokenizers for data prep without importing transformers, whenever that gives transformers' token ids exactly.

Data prep only needs token ids: `tokenizer(texts, add_special_tokens=...)['input_ids']` with truncation and
padding off. For a folder with a tokenizer.json, transformers' fast tokenizer is the `tokenizers` model from
that file plus what its class's constructor changes, and importing transformers (and with it torch) costs
seconds. `load_tokenizer` reproduces that constructor for the classes below and loads with `tokenizers` alone;
anything else goes through transformers (`TransformersTokenizer`), e.g. a folder without tokenizer.json, a
slow or sentencepiece-only tokenizer, remote code, other classes, special tokens the folder's tokenizer.json
lacks (transformers would add them), or tokenizer kwargs other than the ones handled here.

What the fast path reproduces (transformers 4.57 `PreTrainedTokenizerFast.__init__` and subclasses):
- `add_prefix_space` (kwarg or tokenizer_config.json, default False) overrides the pre-tokenizer's own;
- `split_special_tokens` sets `encode_special_tokens`;
- GPTNeoX: the post-processor becomes `[bos] $A [eos]` per `add_bos_token`/`add_eos_token` (default off);
- GPT2/GPTNeoX default special tokens: `<|endoftext|>` as bos/eos/unk.
A hub id is read from the local Hugging Face cache (the snapshot its revision, default `main`, points to),
as transformers does offline; a hub id not cached goes through transformers, which downloads it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from llmfoundry import storage

log = logging.getLogger(__name__)

TOKENIZER_FILE = 'tokenizer.json'
CONFIG_FILE = 'tokenizer_config.json'
SPECIAL_TOKENS_FILE = 'special_tokens_map.json'

_GPT_DEFAULTS = {'bos_token': '<|endoftext|>', 'eos_token': '<|endoftext|>', 'unk_token': '<|endoftext|>'}
# tokenizer_class -> that class's default special tokens. AutoTokenizer uses the Fast class for either name.
_CLASSES: dict[str, dict[str, str]] = {
    'PreTrainedTokenizerFast': {},
    'GPT2Tokenizer': _GPT_DEFAULTS,
    'GPT2TokenizerFast': _GPT_DEFAULTS,
    'GPTNeoXTokenizer': _GPT_DEFAULTS,
    'GPTNeoXTokenizerFast': _GPT_DEFAULTS,
}
_SPECIAL_KEYS = ('bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token')
# Tokenizer kwargs that either do not change token ids or are reproduced here; any other one -> transformers.
_KWARGS = {
    'model_max_length', 'padding_side', 'truncation_side', 'clean_up_tokenization_spaces', 'add_prefix_space',
    'add_bos_token', 'add_eos_token', 'split_special_tokens', 'additional_special_tokens', *_SPECIAL_KEYS,
}  # fmt: skip
_HUB_KWARGS = {'revision', 'cache_dir', 'local_files_only'}
_TOKEN_FLAGS = ('content', 'single_word', 'lstrip', 'rstrip', 'normalized', 'special')


class ConversionTokenizer(Protocol):
    """What data prep uses of a tokenizer."""

    eos_token: str | None
    eos_token_id: int | None
    bos_token_id: int | None

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]: ...


class FastTokenizer:
    """A `tokenizers.Tokenizer` set up as transformers' fast tokenizer class would set it up."""

    def __init__(self, backend: Any, eos_token: str | None, source: str, bos_token: str | None = None) -> None:
        self.backend = backend
        self.eos_token = eos_token
        self.eos_token_id = backend.token_to_id(eos_token) if eos_token is not None else None
        self.bos_token_id = backend.token_to_id(bos_token) if bos_token is not None else None
        self.source = source
        # encode_batch_fast (tokenizers>=0.21) skips the character offsets data prep never uses
        self._encode = getattr(backend, 'encode_batch_fast', backend.encode_batch)

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        return [encoding.ids for encoding in self._encode(texts, add_special_tokens=add_special_tokens)]


class TransformersTokenizer:
    """A transformers tokenizer (`llmfoundry.data.tokenizers.build_tokenizer`) behind the same interface."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.eos_token = tokenizer.eos_token
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_token_id = tokenizer.bos_token_id
        if tokenizer.is_fast:  # what tokenizer(texts) does before encoding: truncation and padding off
            tokenizer.backend_tokenizer.no_truncation()
            tokenizer.backend_tokenizer.no_padding()
            self._fast: FastTokenizer | None = FastTokenizer(tokenizer.backend_tokenizer, None, tokenizer.name_or_path)
        else:
            self._fast = None

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        if self._fast is not None:  # the Rust batch encoder directly: same ids, no Python-side overhead
            return self._fast.encode_batch(texts, add_special_tokens)
        return self.tokenizer(texts, add_special_tokens=add_special_tokens, verbose=False)['input_ids']


@contextlib.contextmanager
def downloaded_tokenizer(url: str, key: str) -> Iterator[str]:
    """The tokenizer folder at the object-storage `url` copied into a private temporary folder for the block (a
    tokenizer holds everything in memory once loaded; private, so concurrent ranks never share a half-copy); a
    storage failure is an OSError naming `key`, like a missing local folder."""
    with tempfile.TemporaryDirectory(prefix='llmfoundry-tokenizer-') as local:
        try:
            storage.download_folder(url, local, key=key)
        except storage.StorageError as err:
            raise OSError(str(err)) from err
        yield local


def load_tokenizer(name: str, kwargs: dict[str, Any] | None = None) -> ConversionTokenizer:
    """`name` (local folder, object-storage folder URL or hub id) as a tokenizer for conversion: `FastTokenizer`
    when it gives transformers' ids without transformers, else `TransformersTokenizer`."""
    kwargs = dict(kwargs or {})
    if storage.is_remote(name):
        with downloaded_tokenizer(name, key='tokenizer') as local:
            fast = load_fast(local, kwargs, name)
            if fast is None:  # transformers loads the same copy: one download
                from llmfoundry.data.tokenizers import load_from  # imports transformers

                return TransformersTokenizer(load_from(name, local, kwargs))
    else:
        path = os.path.expanduser(name.removeprefix('file://'))
        folder = path if os.path.isdir(path) else _hub_snapshot(name, kwargs)
        fast = load_fast(folder, kwargs, name) if folder is not None else None
    if fast is not None:
        if fast.eos_token_id is None:  # as build_tokenizer: packed documents are separated by EOS
            raise ValueError(
                f"tokenizer '{name}' has no EOS token; data prep separates documents with it. Pass one via "
                "tokenizer kwargs, e.g. {eos_token: '<|endoftext|>'}."
            )
        return fast
    from llmfoundry.data.tokenizers import build_tokenizer  # imports transformers

    return TransformersTokenizer(build_tokenizer(name, kwargs))


def _hub_snapshot(name: str, kwargs: dict[str, Any]) -> str | None:
    """The cached snapshot folder of hub id `name`, or None (not a hub id, or not cached)."""
    if name.count('/') > 1 or name.startswith(('/', '.', '~')):
        return None
    from huggingface_hub import constants  # cheap: no HTTP client

    cache = kwargs.get('cache_dir') or constants.HF_HUB_CACHE
    repo = os.path.join(os.path.expanduser(cache), 'models--' + name.replace('/', '--'))
    revision = kwargs.get('revision') or 'main'
    ref = os.path.join(repo, 'refs', revision)
    if os.path.isfile(ref):
        with open(ref) as f:
            revision = f.read().strip()
    snapshot = os.path.join(repo, 'snapshots', revision)
    return snapshot if os.path.isdir(snapshot) else None


def _read_json(folder: str, name: str) -> dict | None:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _content(token: Any) -> str | None:
    return token.get('content') if isinstance(token, dict) else token


def load_fast(folder: str, kwargs: dict[str, Any], name: str | None = None) -> FastTokenizer | None:
    """The folder's tokenizer as transformers would build it, with `tokenizers` alone; None (reason logged)
    when this cannot be guaranteed."""
    name = name or folder
    reason = _unsupported(folder, kwargs)
    if reason is not None:
        log.info('tokenizer %s: loading through transformers (%s)', name, reason)
        return None
    from tokenizers import Tokenizer

    config = {**_read_json(folder, CONFIG_FILE), **{k: v for k, v in kwargs.items() if k not in _HUB_KWARGS}}
    backend = Tokenizer.from_file(os.path.join(folder, TOKENIZER_FILE))
    backend.no_truncation()
    backend.no_padding()
    specials = _special_tokens(folder, config, kwargs)
    missing = _tokens_transformers_would_add(backend, config, specials)
    if missing:
        log.info('tokenizer %s: loading through transformers (it adds %s to tokenizer.json)', name, missing)
        return None
    _set_add_prefix_space(backend, bool(config.get('add_prefix_space', False)))
    backend.encode_special_tokens = bool(config.get('split_special_tokens', False))
    if config['tokenizer_class'].startswith('GPTNeoX'):
        bos, eos = specials.get('bos_token'), specials.get('eos_token')
        if not _set_neox_post_processor(backend, bos, eos, config):
            return None
    return FastTokenizer(backend, specials.get('eos_token'), name, specials.get('bos_token'))


def _unsupported(folder: str, kwargs: dict[str, Any]) -> str | None:
    """Why `folder` + `kwargs` need transformers, or None."""
    if not os.path.isfile(os.path.join(folder, TOKENIZER_FILE)):
        return f'no {TOKENIZER_FILE}'
    if os.path.isfile(os.path.join(folder, 'added_tokens.json')):
        return 'legacy added_tokens.json'
    extra = sorted(set(kwargs) - _KWARGS - _HUB_KWARGS)
    if extra or kwargs.get('use_fast') is False:
        return f'tokenizer kwargs {extra}'
    config = _read_json(folder, CONFIG_FILE)
    if config is None:
        return f'no {CONFIG_FILE}'
    if 'auto_map' in config:
        return 'remote code (auto_map)'
    if config.get('tokenizer_class') not in _CLASSES:
        return f'tokenizer_class {config.get("tokenizer_class")!r}'
    if config.get('tokenizer_class', '').startswith('GPT2') and {**config, **kwargs}.get('add_bos_token'):
        return 'GPT2 add_bos_token'
    return None


def _special_tokens(folder: str, config: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The special tokens transformers ends up with: class defaults < tokenizer_config.json + kwargs, then the
    legacy special_tokens_map.json (read only when the config has no added_tokens_decoder) over all but a
    non-empty kwarg."""
    specials: dict[str, Any] = dict(_CLASSES[config['tokenizer_class']])
    specials.update({k: config[k] for k in (*_SPECIAL_KEYS, 'additional_special_tokens') if k in config})
    legacy = _read_json(folder, SPECIAL_TOKENS_FILE) if 'added_tokens_decoder' not in config else None
    for key, value in (legacy or {}).items():
        if kwargs.get(key):
            continue
        if key == 'additional_special_tokens':
            value = [*(specials.get(key) or []), *value]
        specials[key] = value
    result = {k: _content(specials.get(k)) for k in _SPECIAL_KEYS}
    result['additional_special_tokens'] = [_content(v) for v in specials.get('additional_special_tokens') or []]
    return result


def _tokens_transformers_would_add(backend: Any, config: dict[str, Any], specials: dict[str, Any]) -> list[str]:
    """Tokens of tokenizer_config.json (added_tokens_decoder, special tokens) that tokenizer.json lacks, or has
    with other flags: transformers adds them on load, which changes the ids."""
    have = {token.content: token for token in backend.get_added_tokens_decoder().values()}
    missing = []
    for token in (config.get('added_tokens_decoder') or {}).values():
        ours = have.get(token['content'])
        if ours is None or any(getattr(ours, flag) != token.get(flag, getattr(ours, flag)) for flag in _TOKEN_FLAGS):
            missing.append(token['content'])
    extra = config.get('extra_special_tokens') or {}
    wanted = [specials.get(k) for k in _SPECIAL_KEYS] + specials['additional_special_tokens'] + list(extra.values())
    missing += [t for t in wanted if t is not None and _content(t) not in have and _content(t) not in missing]
    return missing


def _set_add_prefix_space(backend: Any, add_prefix_space: bool) -> None:
    """transformers rebuilds the pre-tokenizer when its add_prefix_space differs from the class's setting."""
    if backend.pre_tokenizer is None:
        return
    from tokenizers import pre_tokenizers

    state = json.loads(backend.pre_tokenizer.__getstate__())
    if state.get('add_prefix_space', add_prefix_space) == add_prefix_space:
        return
    kind: Callable[..., Any] = getattr(pre_tokenizers, state.pop('type'))
    state['add_prefix_space'] = add_prefix_space
    backend.pre_tokenizer = kind(**state)


def _set_neox_post_processor(backend: Any, bos: str | None, eos: str | None, config: dict[str, Any]) -> bool:
    """GPTNeoX's `[bos] $A [eos]` template (both off by default); False when transformers would refuse it."""
    from tokenizers import processors

    add_bos, add_eos = bool(config.get('add_bos_token', False)), bool(config.get('add_eos_token', False))
    if (add_bos and bos is None) or (add_eos and eos is None):
        return False
    single = (f'{bos}:0 ' if add_bos else '') + '$A:0' + (f' {eos}:0' if add_eos else '')
    pair = single + (f' {bos}:1' if add_bos else '') + ' $B:1' + (f' {eos}:1' if add_eos else '')
    special = [(t, backend.token_to_id(t)) for t, on in ((bos, add_bos), (eos, add_eos)) if on]
    backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)
    return True
