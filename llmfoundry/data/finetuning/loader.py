"""`train_loader: {name: finetuning, dataset: {...}}` (llm-foundry's keys) -> a DataLoader of masked batches.

The data comes from `hf_name` + `split` (+ `hf_kwargs`, `preprocessing_fn`, `safe_load`: loaded with `datasets`,
tokenised and masked once in memory) or from MDS (`remote`/`local`/`streams` and StreamingDataset's own keys:
read with mosaicml-streaming, masked per sample). Shared keys: max_seq_len, decoder_only_format (must be true),
target_prompts, target_responses, shuffle, shuffle_seed, allow_pad_trimming, pad_to_longest, packing_ratio (a
number >= 1 or 'auto'), max_leftover_bins_to_keep. Sequence parallelism (seq_parallel_replication, replication)
is not built: only 1/null is accepted. Batches: input_ids, attention_mask, labels, sequence_id.
"""

from __future__ import annotations

import logging
from typing import Any

from streaming import StreamingDataLoader
from transformers import PreTrainedTokenizerBase

from llmfoundry import storage
from llmfoundry.config.validation import ConfigError, check_keys
from llmfoundry.data.config_keys import to_plain
from llmfoundry.data.finetuning.collate import FinetuningCollator
from llmfoundry.data.finetuning.formats import resolve_preprocessor
from llmfoundry.data.finetuning.masking import MaskPolicy, Row
from llmfoundry.data.finetuning.mds import StreamingFinetuningDataset
from llmfoundry.data.finetuning.memory_loader import EpochSampler, ResumableLoader
from llmfoundry.data.finetuning.packing import Packer, auto_packing_ratio, profile_size
from llmfoundry.data.finetuning.preflight import check_finetuning_data
from llmfoundry.data.finetuning.sources import describe, load_raw, masked_rows
from llmfoundry.data.shm import clean_stale_streaming_shm
from llmfoundry.data.text_loader import LOADER_KEYS, STREAMING_KEYS, build_streams, with_local

log = logging.getLogger(__name__)

SHARED_KEYS = ('max_seq_len', 'decoder_only_format', 'target_prompts', 'target_responses', 'shuffle',
               'shuffle_seed', 'allow_pad_trimming', 'pad_to_longest', 'packing_ratio', 'max_leftover_bins_to_keep',
               'seq_parallel_replication', 'auto_packing_replication')
HF_KEYS = ('hf_name', 'split', 'hf_kwargs', 'preprocessing_fn', 'safe_load')
MDS_KEYS = tuple(STREAMING_KEYS) + ('streams', 'token_encoding_type')
UNBUILT_WHEN_NOT_ONE = ('seq_parallel_replication', 'auto_packing_replication', 'replication')


def _check_dataset(cfg: dict[str, Any], key: str) -> bool:
    """Validate the dataset section; True for MDS, False for `datasets`."""
    check_keys(cfg, set(SHARED_KEYS + HF_KEYS + MDS_KEYS), key)
    if 'max_seq_len' not in cfg:
        raise ConfigError(f'{key}.max_seq_len is required')
    if cfg.get('decoder_only_format') is not True:
        raise ConfigError(f'{key}.decoder_only_format={cfg.get("decoder_only_format")!r}: set it to true '
                          '(encoder-decoder models are not built here)')
    for name in UNBUILT_WHEN_NOT_ONE:
        if cfg.get(name) not in (None, 1):
            raise ConfigError(f'{key}.{name}={cfg[name]!r}: sequence parallelism is not built; remove it or set 1')
    if cfg.get('max_leftover_bins_to_keep') is not None and cfg.get('packing_ratio') is None:
        raise ConfigError(f'{key}.max_leftover_bins_to_keep is set but packing_ratio is not; set packing_ratio '
                          'to pack, or remove max_leftover_bins_to_keep')
    mds_set = sorted(k for k in ('remote', 'local', 'streams') if cfg.get(k) is not None)
    hf_set = sorted(k for k in HF_KEYS if k != 'split' and cfg.get(k) is not None)  # split serves both
    if cfg.get('hf_name') is not None:
        if mds_set:
            raise ConfigError(f'{key}: hf_name reads a `datasets` source, but {mds_set} are MDS keys; keep one')
        if cfg.get('split') is None:
            raise ConfigError(f'{key}.split is required with hf_name (e.g. split: train)')
        return False
    if not mds_set:
        raise ConfigError(f'{key}: set hf_name (a `datasets` source) or remote/local/streams (MDS)')
    if hf_set:
        raise ConfigError(f'{key}: {hf_set} apply to hf_name only, but this dataset is MDS ({mds_set})')
    if cfg.get('streams') is not None and (cfg.get('remote') or cfg.get('local')):
        raise ConfigError(f'{key}: set remote/local per stream under streams, or one remote/local, not both')
    return True


def _packing_ratio(value: Any, sizes: list[int] | None, max_seq_len: int, batch_size: int,
                   leftovers: int | None, key: str) -> float:
    if value == 'auto':
        ratio = auto_packing_ratio(sizes or [], max_seq_len, batch_size, leftovers)
        log.info('%s.packing_ratio auto: picked %s from %d profiled examples', key, ratio, len(sizes or []))
        return ratio
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
        raise ConfigError(f"{key}.packing_ratio={value!r}: use a number >= 1 or 'auto'")
    return float(value)


def build_finetuning_dataloader(
    loader_cfg: dict[str, Any], tokenizer: PreTrainedTokenizerBase, device_batch_size: int,
    section: str = 'train_loader',
) -> ResumableLoader | StreamingDataLoader:  # fmt: skip
    """A loader config section (`section` names it in errors) -> a loader with state_dict/load_state_dict."""
    cfg = dict(to_plain(loader_cfg))
    check_keys(cfg, LOADER_KEYS, section)
    if cfg.get('name', 'finetuning') != 'finetuning':
        raise ConfigError(f"{section}.name '{cfg['name']}': this builder serves 'finetuning'")
    if not isinstance(cfg.get('dataset'), dict):
        raise ConfigError(f'{section}.dataset is required (a mapping)')
    key = f'{section}.dataset'
    dataset_cfg = dict(cfg['dataset'])
    is_mds = _check_dataset(dataset_cfg, key)
    policy = MaskPolicy.from_config(dataset_cfg.get('target_prompts'), dataset_cfg.get('target_responses'), key)
    max_seq_len = int(dataset_cfg['max_seq_len'])
    packing = dataset_cfg.get('packing_ratio')
    leftovers = dataset_cfg.get('max_leftover_bins_to_keep')
    want_sizes = profile_size(max_seq_len, device_batch_size) if packing == 'auto' else 0

    check_finetuning_data(cfg, section, getattr(tokenizer, 'name_or_path', None) or 'YOUR_TOKENIZER')
    if is_mds:
        dataset: Any = _mds_dataset(dataset_cfg, tokenizer, policy, device_batch_size, key)
        sizes = [len(dataset[i][0]) for i in range(min(want_sizes, dataset.num_samples))]
    else:
        rows = _memory_rows(dataset_cfg, tokenizer, policy, key)
        sizes = [len(ids) for ids, _ in rows[:want_sizes]]
    ratio = 1.0 if packing is None else _packing_ratio(packing, sizes, max_seq_len, device_batch_size, leftovers, key)
    examples_per_batch = int(device_batch_size * ratio)
    packer: Packer[Row] | None = None
    if examples_per_batch > device_batch_size:
        packer = Packer(device_batch_size, max_seq_len, leftovers)
    collate = FinetuningCollator(tokenizer.pad_token_id, max_seq_len, bool(dataset_cfg.get('allow_pad_trimming')),
                                 bool(dataset_cfg.get('pad_to_longest')), packer)
    num_workers = cfg.get('num_workers', 0)
    common = {
        'collate_fn': collate, 'drop_last': cfg.get('drop_last', False), 'num_workers': num_workers,
        'pin_memory': cfg.get('pin_memory', False), 'timeout': cfg.get('timeout', 0),
        **({'prefetch_factor': cfg.get('prefetch_factor', 2),
            'persistent_workers': cfg.get('persistent_workers', False)} if num_workers > 0 else {}),
    }  # fmt: skip
    if num_workers == 0:
        for name in ('prefetch_factor', 'persistent_workers'):
            if cfg.get(name):
                log.warning('%s.%s has no effect with num_workers: 0', section, name)
    if is_mds:
        dataset.batch_size = examples_per_batch  # streaming partitions by it when iteration starts
        dataset.examples_per_batch_row = examples_per_batch / device_batch_size
        return StreamingDataLoader(dataset, batch_size=examples_per_batch, **common)
    sampler = EpochSampler(len(rows), bool(dataset_cfg.get('shuffle', False)), int(dataset_cfg.get('shuffle_seed', 0)),
                           bool(common['drop_last']))
    return ResumableLoader(rows, sampler, examples_per_batch, **common)


def _memory_rows(cfg: dict[str, Any], tokenizer: PreTrainedTokenizerBase, policy: MaskPolicy, key: str) -> list[Row]:
    hf_name, split, hf_kwargs = str(cfg['hf_name']), str(cfg['split']), dict(cfg.get('hf_kwargs') or {})
    preprocess = resolve_preprocessor(cfg.get('preprocessing_fn'), hf_name, f'{key}.preprocessing_fn')
    raw = load_raw(hf_name, split, hf_kwargs, bool(cfg.get('safe_load')), key)
    return masked_rows(raw, preprocess, tokenizer, policy, int(cfg['max_seq_len']),
                       describe(hf_name, split, hf_kwargs))


def _mds_dataset(cfg: dict[str, Any], tokenizer: PreTrainedTokenizerBase, policy: MaskPolicy, batch_size: int,
                 key: str) -> StreamingFinetuningDataset:
    streaming = {k: v for k, v in cfg.items() if k in STREAMING_KEYS and k != 'replication'}
    streams = build_streams(cfg['streams'], cfg.get('split'), f'{key}.streams') if cfg.get('streams') else None
    storage.sync_s3_endpoint_env()
    clean_stale_streaming_shm()  # a run killed earlier may have left shared memory that would fail this one
    return StreamingFinetuningDataset(
        tokenizer=tokenizer, policy=policy, max_seq_len=int(cfg['max_seq_len']),
        token_encoding_type=cfg.get('token_encoding_type', 'int64'), streams=streams, batch_size=batch_size,
        **with_local(streaming, cfg.get('split')),
    )  # fmt: skip

