"""The pretraining loader, `train_loader: {name: text, dataset: {...}, ...}`, on mosaicml-streaming.

Dataset keys are llm-foundry's: StreamingDataset's own arguments (local, remote, split, shuffle,
shuffle_seed, shuffle_algo, num_canonical_nodes, predownload, download_retry, ...), `streams`
(name -> {remote, local, split, proportion | repeat | choose, ...}), and ours: max_seq_len,
eos_token_id or bos_token_id (emit sequence_id), token_encoding_type (legacy byte rows).

Samples are read from a `tokens` column (any integer ndarray, or raw bytes decoded with
token_encoding_type) or a `text` column (tokenised on the fly, truncated to max_seq_len).
The world (rank, ranks, local ranks) comes from torch.distributed or RANK/WORLD_SIZE/LOCAL_* env.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import tempfile
from typing import Any

import numpy as np
import torch
from streaming import Stream, StreamingDataLoader, StreamingDataset
from streaming.base.storage.download import DOWNLOADER_MAPPINGS, CloudDownloader
from transformers import PreTrainedTokenizerBase

from llmfoundry import storage
from llmfoundry.config.validation import ConfigError, check_keys
from llmfoundry.data.collate import TextCollator
from llmfoundry.data.config_keys import to_plain
from llmfoundry.data.shm import clean_stale_streaming_shm

TOKEN_ENCODINGS = ('int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64')
OWN_DATASET_KEYS = ('max_seq_len', 'eos_token_id', 'bos_token_id', 'token_encoding_type', 'streams')
# StreamingDataset's and Stream's own arguments pass through, so new streaming options just work.
STREAMING_KEYS = tuple(p for p in inspect.signature(StreamingDataset.__init__).parameters
                       if p not in ('self', 'streams', 'batch_size'))
STREAM_KEYS = tuple(p for p in inspect.signature(Stream.__init__).parameters if p != 'self')
LOADER_KEYS = ('name', 'dataset', 'drop_last', 'num_workers', 'pin_memory', 'prefetch_factor',
               'persistent_workers', 'timeout')


class StreamingTextDataset(StreamingDataset):
    """A StreamingDataset whose samples are 1-D LongTensors of at most `max_seq_len` token ids."""

    def __init__(
        self, *, tokenizer: PreTrainedTokenizerBase, max_seq_len: int, token_encoding_type: str = 'int64',
        **streaming_kwargs: Any,
    ) -> None:  # fmt: skip
        if token_encoding_type not in TOKEN_ENCODINGS:
            raise ValueError(f"token_encoding_type '{token_encoding_type}' is not one of {TOKEN_ENCODINGS}")
        super().__init__(**streaming_kwargs)
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.token_encoding_type = token_encoding_type

    def __getitem__(self, idx: int) -> torch.Tensor:
        sample = super().__getitem__(idx)
        if 'tokens' in sample:
            tokens = sample['tokens']
            if isinstance(tokens, bytes):  # legacy layout: raw bytes of a fixed-width integer array
                tokens = np.frombuffer(tokens, dtype=self.token_encoding_type)
            ids = torch.from_numpy(np.array(tokens[:self.max_seq_len], dtype=np.int64))  # a writable copy
        elif 'text' in sample:
            encoded = self.tokenizer(sample['text'], truncation=True, max_length=self.max_seq_len)
            ids = torch.tensor(encoded['input_ids'], dtype=torch.long)
        else:
            raise KeyError(f"sample {idx} has neither a 'tokens' nor a 'text' column: {sorted(sample)}")
        return ids


def default_local(remote: str, split: str | None) -> str:
    """A cache folder for a remote stream given without `local`, private to this run.

    Keyed by the run's rendezvous address (shared by its ranks, unique among live runs) or, without
    one, by the process id: streaming refuses two live datasets caching one remote in one folder.
    """
    run = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}" if 'MASTER_PORT' in os.environ else (
        f'pid{os.getpid()}')
    key = hashlib.blake2s(f'{run}|{remote}|{split or ""}'.encode(), digest_size=8).hexdigest()
    return os.path.join(tempfile.gettempdir(), 'llmfoundry-streaming', key)


def with_local(cfg: dict[str, Any], split: str | None) -> dict[str, Any]:
    """`cfg` (a dataset or stream section) with a private cache folder as `local` when it streams a remote
    without one."""
    if cfg.get('remote') and not cfg.get('local'):
        return {**cfg, 'local': default_local(cfg['remote'], cfg.get('split', split))}
    return cfg


INDEX_FILE = 'index.json'
DATA_PREP = ("llmfoundry data-prep convert_text_to_mds --input_folder YOUR_TEXT_FOLDER --output_folder {folder} "
             "--concat_tokens {seq_len} --tokenizer {tokenizer} --eos_text '<|endoftext|>'")


def check_remote(remote: str, key: str) -> None:
    """ConfigError naming `key` unless mosaicml-streaming can download from `remote` (it reads s3://, gs://,
    oci://, azure://, azure-dl://, hf://, dbfs:/, sftp://, alipan:// with its own clients, not fsspec)."""
    try:
        CloudDownloader.get(remote)  # streaming's own choice of client; its constructor imports that client
    except ValueError as err:
        names = sorted(name for name in DOWNLOADER_MAPPINGS if name and name != 'dbfs-uc')  # dbfs-uc: dbfs:/Volumes
        schemes = ', '.join('dbfs:/' if name == 'dbfs' else f'{name}://' for name in names)
        raise ConfigError(f'{key}={remote!r}: mosaicml-streaming cannot download from it ({err}); '
                          f'it reads {schemes}, or a local folder') from err
    except ImportError as err:
        raise ConfigError(f'{key}={remote!r}: mosaicml-streaming needs the module {err.name!r} for this '
                          f'scheme: {err}') from err


def check_local_data(loader_cfg: dict[str, Any], section: str, tokenizer: str = 'YOUR_TOKENIZER',
                     data_prep: str = DATA_PREP) -> None:
    """Each dataset (or stream) with no `remote` must have its MDS index in `local`; the error names the key,
    the folder and the data-prep command that creates it (`data_prep`, formatted with folder, local, split,
    seq_len and tokenizer). With a remote, `local` is only a cache, and the remote must be one streaming can
    download from."""
    dataset = to_plain(loader_cfg).get('dataset')
    if not isinstance(dataset, dict):
        return
    path = f'{section}.dataset'
    streams = dataset.get('streams')
    sources = [(f'{path}.streams.{name}', cfg) for name, cfg in streams.items() if isinstance(cfg, dict)] if (
        isinstance(streams, dict)) else [(path, dataset)]
    for key, cfg in sources:
        if cfg.get('remote'):
            check_remote(str(cfg['remote']), f'{key}.remote')
            continue
        local, split = cfg.get('local'), cfg.get('split', dataset.get('split')) or ''
        if not local:
            raise ConfigError(f'{key}: set local (a folder of MDS shards) or remote (to stream from).')
        folder = os.path.join(str(local), split)
        if os.path.isfile(os.path.join(folder, INDEX_FILE)):
            continue
        where = 'does not exist' if not os.path.exists(str(local)) else f'has no {os.path.join(split, INDEX_FILE)}'
        command = data_prep.format(folder=folder, local=local, split=split or 'train', tokenizer=tokenizer,
                                   seq_len=dataset.get('max_seq_len', 2048))
        raise ConfigError(f"{key}.local={local!r} {where} and {key}.remote is not set; create the shards with: "
                          f'{command}')


def build_streams(streams_cfg: dict[str, Any], split: str | None, path: str) -> list[Stream]:
    """A `streams:` mapping (name -> Stream options; `path` names it in errors) -> streaming Streams."""
    streams = []
    for name, cfg in streams_cfg.items():
        if not isinstance(cfg, dict):
            raise ValueError(f"'{path}.{name}' must be a mapping of stream options")
        check_keys(cfg, STREAM_KEYS, f'{path}.{name}')
        streams.append(Stream(**with_local(cfg, split)))
    return streams


def build_text_dataset(
    dataset_cfg: dict[str, Any], tokenizer: PreTrainedTokenizerBase, device_batch_size: int,
    path: str = 'train_loader.dataset',
) -> StreamingTextDataset:  # fmt: skip
    cfg = dict(to_plain(dataset_cfg))
    check_keys(cfg, STREAMING_KEYS + OWN_DATASET_KEYS, path)
    if 'max_seq_len' not in cfg:
        raise ValueError(f"'{path}.max_seq_len' is required")
    if cfg.get('eos_token_id') is not None and cfg.get('bos_token_id') is not None:
        raise ValueError(f"set at most one of '{path}.eos_token_id' and '{path}.bos_token_id'")
    own = {key: cfg.pop(key) for key in OWN_DATASET_KEYS if key in cfg}
    streams_cfg = own.get('streams')
    streams = build_streams(streams_cfg, cfg.get('split'), f'{path}.streams') if streams_cfg else None
    storage.sync_s3_endpoint_env()
    # A run killed earlier may have left shared memory that would make this one fail.
    clean_stale_streaming_shm()
    return StreamingTextDataset(
        tokenizer=tokenizer, max_seq_len=own['max_seq_len'],
        token_encoding_type=own.get('token_encoding_type', 'int64'),
        streams=streams, batch_size=device_batch_size, **with_local(cfg, cfg.get('split')),
    )  # fmt: skip


def build_text_dataloader(
    loader_cfg: dict[str, Any], tokenizer: PreTrainedTokenizerBase, device_batch_size: int,
    section: str = 'train_loader',
) -> StreamingDataLoader:  # fmt: skip
    """A loader config section (`section` names it in errors) -> a StreamingDataLoader.

    Resuming: `loader.load_state_dict(state)` on a freshly built loader, before iterating it.
    """
    cfg = dict(to_plain(loader_cfg))
    check_keys(cfg, LOADER_KEYS, section)
    if cfg.get('name', 'text') != 'text':
        raise ValueError(f"{section}.name '{cfg['name']}': this builder serves 'text'")
    if 'dataset' not in cfg:
        raise ValueError(f"'{section}.dataset' is required")
    check_local_data(cfg, section, getattr(tokenizer, 'name_or_path', None) or 'YOUR_TOKENIZER')
    dataset = build_text_dataset(cfg['dataset'], tokenizer, device_batch_size, f'{section}.dataset')
    collate = TextCollator(
        tokenizer.pad_token_id, dataset.max_seq_len,
        cfg['dataset'].get('eos_token_id'), cfg['dataset'].get('bos_token_id'),
    )  # fmt: skip
    num_workers = cfg.get('num_workers', 0)
    workers_only = {'prefetch_factor': cfg.get('prefetch_factor', 2),
                    'persistent_workers': cfg.get('persistent_workers', False)} if num_workers > 0 else {}
    return StreamingDataLoader(
        dataset, batch_size=device_batch_size, collate_fn=collate, drop_last=cfg.get('drop_last', False),
        num_workers=num_workers, pin_memory=cfg.get('pin_memory', False), timeout=cfg.get('timeout', 0),
        **workers_only,
    )  # fmt: skip
