"""No key is accepted and ignored: every TrainConfig / FSDPConfig field is read by the code, or is in a table of
no-op keys whose warning names it and says why. The keys that act through the environment, the logged
hyperparameters and the sharding plan are checked for their values here too."""

from __future__ import annotations

import ast
import dataclasses
import logging
import os
import re
import socket
from pathlib import Path

import pytest
import torch.distributed as dist

from llmfoundry.config.environment import cuda_environment
from llmfoundry.config.metadata import logged_config
from llmfoundry.config.no_op import NO_OP_KEYS, no_op_messages
from llmfoundry.config.schema import FSDPConfig, TrainConfig
from llmfoundry.config.validation import ConfigError
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.train.entry import apply_cuda_environment
from llmfoundry.train.parallel import FSDP1_ONLY_KNOBS, build_mesh, parallelize, warn_fsdp1_knobs
from llmfoundry.train.setup import sharding_plan

PACKAGE = Path(__file__).resolve().parents[2] / 'llmfoundry'
# What the code calls a config when it reads a key: `config.<key>`, `self.config.<key>`, `fsdp.<key>`,
# `config.fsdp_config.<key>`; in schema.py, `self.<key>` (a validation that refuses values also acts).
CONFIG_NAMES = re.compile(r'(?:^|\.)(config|fsdp|fsdp_config)$')
NO_OP_MODULE = PACKAGE / 'config' / 'no_op.py'


def minimal(**keys) -> TrainConfig:
    return TrainConfig(model={}, tokenizer={}, optimizer={}, scheduler={}, train_loader={}, max_duration='1ba',
                       max_seq_len=8, global_train_batch_size=1, **keys)


def attribute_reads() -> dict[str, set[str]]:
    """key -> the files that read `<config>.<key>` (an attribute load on a config-named expression)."""
    reads: dict[str, set[str]] = {}
    for path in PACKAGE.rglob('*.py'):
        if path == NO_OP_MODULE:  # its reads only produce the no-op warnings
            continue
        owners = CONFIG_NAMES if path.name != 'schema.py' else re.compile(r'^self$')
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            loads = isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)
            if loads and owners.search(ast.unparse(node.value)):
                reads.setdefault(node.attr, set()).add(str(path.relative_to(PACKAGE)))
    return reads


def test_every_key_is_read_or_documented_as_a_no_op():
    reads = attribute_reads()
    no_ops = set(NO_OP_KEYS) | {f'fsdp_config.{key}' for key in FSDP1_ONLY_KNOBS}
    silent = [f'{prefix}{field.name}' for cls, prefix in ((TrainConfig, ''), (FSDPConfig, 'fsdp_config.'))
              for field in dataclasses.fields(cls)
              if field.name not in reads and f'{prefix}{field.name}' not in no_ops]
    assert silent == [], f'accepted and ignored: {silent}; read them, or add them to config/no_op.py with the reason'


def test_a_no_op_key_is_not_also_read():
    reads = attribute_reads()
    both = [key for key in NO_OP_KEYS if key.split('.')[-1] in reads]
    assert both == []


def test_each_no_op_key_warns_with_its_reason_when_set():
    config = minimal(spin_dataloaders=False, fsdp_config=FSDPConfig(load_monolith_rank0_only=True))
    assert no_op_messages(config) == [f'spin_dataloaders=False has no effect: {NO_OP_KEYS["spin_dataloaders"]}.', (
        'fsdp_config.load_monolith_rank0_only=True has no effect: '
        f'{NO_OP_KEYS["fsdp_config.load_monolith_rank0_only"]}.')]
    assert no_op_messages(minimal(fsdp_config=FSDPConfig())) == []  # llm-foundry's defaults are quiet
    assert no_op_messages(minimal()) == []


@pytest.mark.parametrize('key', sorted(FSDP1_ONLY_KNOBS))
def test_each_fsdp1_knob_warns_when_set(key, caplog):
    default = FSDP1_ONLY_KNOBS[key][0]
    other = (not default) if isinstance(default, bool) else 'NONE'
    with caplog.at_level(logging.WARNING):
        warn_fsdp1_knobs(FSDPConfig(**{key: other}))
    assert [record.getMessage() for record in caplog.records] == [
        f'fsdp_config.{key}={other!r} is a no-op on FSDP2 ({FSDP1_ONLY_KNOBS[key][1]}).']


# ----- keys that act through the environment --------------------------------------------------------------------
@pytest.mark.parametrize(('keys', 'expected'), [
    ({}, {'PYTORCH_CUDA_ALLOC_CONF': 'expandable_segments:True'}),  # llm-foundry's default
    ({'expandable_segments': False}, {}),
    ({'max_split_size_mb': 512}, {'PYTORCH_CUDA_ALLOC_CONF': 'max_split_size_mb:512,expandable_segments:True'}),
    ({'max_split_size_mb': 128, 'expandable_segments': False, 'cuda_load_lazy': True},
     {'PYTORCH_CUDA_ALLOC_CONF': 'max_split_size_mb:128', 'CUDA_MODULE_LOADING': 'LAZY'}),
])
def test_cuda_keys_become_environment_variables(keys, expected):
    assert cuda_environment(minimal(**keys)) == expected


def test_the_config_replaces_the_allocator_setting_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv('PYTORCH_CUDA_ALLOC_CONF', 'garbage_collection_threshold:0.6')
    monkeypatch.delenv('CUDA_MODULE_LOADING', raising=False)
    with caplog.at_level(logging.WARNING):
        assert apply_cuda_environment(minimal(cuda_load_lazy=True)) == {
            'PYTORCH_CUDA_ALLOC_CONF': 'expandable_segments:True', 'CUDA_MODULE_LOADING': 'LAZY'}
    assert [r.getMessage() for r in caplog.records] == ['The config replaces PYTORCH_CUDA_ALLOC_CONF='
                                                        'garbage_collection_threshold:0.6 from the environment '
                                                        '(llm-foundry does the same)']
    assert os.environ['PYTORCH_CUDA_ALLOC_CONF'] == 'expandable_segments:True'
    assert os.environ['CUDA_MODULE_LOADING'] == 'LAZY'


# ----- metadata in the logged hyperparameters -------------------------------------------------------------------
def test_metadata_is_flattened_into_the_logged_config():
    resolved = {'run_name': 'r', 'metadata': {'team': 'nlp', 'sweep': {'id': 3}}}
    assert logged_config(minimal(metadata=resolved['metadata']), resolved) == {
        'run_name': 'r', 'team': 'nlp', 'sweep': {'id': 3}}
    kept = minimal(metadata=resolved['metadata'], flatten_metadata=False)
    assert logged_config(kept, resolved) == resolved


def test_a_metadata_key_that_would_hide_a_config_key_is_refused():
    resolved = {'run_name': 'r', 'metadata': {'run_name': 'other'}}
    with pytest.raises(ConfigError, match='metadata keys run_name are also config keys'):
        logged_config(minimal(metadata=resolved['metadata']), resolved)


# ----- fsdp_config.verbose: the sharding plan --------------------------------------------------------------------
@pytest.fixture
def one_gloo_rank():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_verbose_plan_names_each_fully_shard_unit_with_its_mesh(one_gloo_rank):
    fsdp = FSDPConfig(mixed_precision='PURE', verbose=True)
    model = MPTForCausalLM(MPTConfig(d_model=16, n_heads=2, n_layers=2, vocab_size=32, max_seq_len=8,
                                     attn_config={'attn_impl': 'torch'}))
    parallelize(model, fsdp, build_mesh(fsdp, 1, 'cpu'), precision='fp32')
    # Wqkv, out_proj, up_proj, down_proj (each with its bias), 2 layer norms (weight and bias)
    block = (16 * 48 + 48) + (16 * 16 + 16) + (16 * 64 + 64) + (64 * 16 + 16) + 2 * (2 * 16)
    placement = "over mesh {'shard': 1} as [Shard(dim=0)]"
    assert sharding_plan(model, fsdp) == [
        'sharding plan: FULL_SHARD, mixed_precision PURE, cpu_offload False; 3 fully_shard units',
        f'  (root) (MPTForCausalLM): {32 * 16 + 8 * 16 + 2 * 16:,} parameters {placement}',  # wte, wpe, norm_f
        f'  transformer.blocks.0 (MPTBlock): {block:,} parameters {placement}',
        f'  transformer.blocks.1 (MPTBlock): {block:,} parameters {placement}',
    ]


def test_verbose_plan_without_sharding_says_so():
    model = MPTForCausalLM(MPTConfig(d_model=16, n_heads=2, n_layers=1, vocab_size=32, max_seq_len=8,
                                     attn_config={'attn_impl': 'torch'}))
    assert sharding_plan(model, FSDPConfig()) == ['sharding plan: no module is sharded (one rank, or no fsdp_config)']
