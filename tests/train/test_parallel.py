"""FSDP2 parallelism from fsdp_config: every strategy on 2 gloo ranks trains like 1 rank, meta-device init equals
a single-process init and never holds full weights, and the config mappings (mesh, mixed precision, activation
checkpointing, FSDP1 knobs) are what the module documents."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.distributed as dist
from ranks import collect_from_ranks
from torch._dynamo.utils import counters
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper, OffloadWrapper
from torch.distributed.fsdp import MixedPrecisionPolicy
from torch.distributed.tensor import DTensor

from llmfoundry.config.schema import FSDPConfig
from llmfoundry.config.validation import ConfigError
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.train.parallel import (
    build_mesh,
    find_blocks,
    mesh_shape,
    mixed_precision_policy,
    parallelize,
    unwrapped_name,
)
from llmfoundry.train.trainer import token_losses_sum

WORLD, STEPS, ROWS, SEQ, VOCAB = 2, 10, 4, 16, 64
# (name, fsdp_config keys, microbatches per rank, compile_config): all must reproduce the 1-rank run
VARIANTS = [
    ('FULL_SHARD', {'sharding_strategy': 'FULL_SHARD'}, 1, None),
    ('FULL_SHARD, 2 microbatches, forward_prefetch', {'sharding_strategy': 'FULL_SHARD', 'forward_prefetch': True},
     2, None),
    ('SHARD_GRAD_OP, activation checkpointing, compiled (aot_eager)',
     {'sharding_strategy': 'SHARD_GRAD_OP', 'activation_checkpointing': True}, 1, {'backend': 'aot_eager'}),
    ('HYBRID_SHARD 1x2', {'sharding_strategy': 'HYBRID_SHARD', 'data_parallel_replicate_degree': 1}, 1, None),
    ('HYBRID_SHARD 2x1', {'sharding_strategy': 'HYBRID_SHARD', 'data_parallel_shard_degree': 1}, 1, None),
    ('NO_SHARD', {'sharding_strategy': 'NO_SHARD'}, 1, None),
]


def tiny_config(n_layers: int = 2, d_model: int = 32, vocab: int = VOCAB, device: str = 'cpu') -> MPTConfig:
    return MPTConfig(d_model=d_model, n_heads=4, n_layers=n_layers, vocab_size=vocab, max_seq_len=SEQ,
                     attn_config={'attn_impl': 'torch'}, init_device=device)


def tiny_model(device: str = 'cpu', **kwargs) -> MPTForCausalLM:
    torch.manual_seed(0)  # fixes the model's init_seed, whichever device it is built on
    return MPTForCausalLM(tiny_config(device=device, **kwargs))


def global_batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)
    return [torch.randint(0, VOCAB, (ROWS, SEQ), generator=generator) for _ in range(STEPS)]


def train(model: torch.nn.Module, rank: int, world: int, microbatches: int) -> list[float]:
    """Losses then gradient norms of STEPS steps of the trainer's step: each rank backpropagates its summed CE /
    global targets x world (gradient reduction averages over ranks)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    global_targets = ROWS * (SEQ - 1)
    losses, norms = [], []
    for batch in global_batches():
        parts = batch.chunk(world)[rank].chunk(microbatches)
        loss_sum = torch.zeros(())
        for index, micro in enumerate(parts):
            if world > 1:
                model.set_requires_gradient_sync(index == len(parts) - 1)
            summed = token_losses_sum(model(input_ids=micro).logits, micro)
            (summed * (world / global_targets)).backward()
            loss_sum += summed.detach()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=float('inf'))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if world > 1:
            dist.all_reduce(loss_sum)
        losses.append(float(loss_sum) / global_targets)
        # Adam hardly sees a gradient's scale, so the norm checks the world-size normalisation
        norms.append(float(norm.full_tensor() if isinstance(norm, DTensor) else norm))
    return losses + norms


def sharded(fsdp: FSDPConfig, compile_config: dict | None = None, **model_kwargs) -> MPTForCausalLM:
    """Built on meta, parallelised, then materialised shard by shard (the trainer's path)."""
    return parallelize(tiny_model('meta', **model_kwargs), fsdp, build_mesh(fsdp, WORLD, 'cpu'), compile_config,
                       precision='fp32')


def meta_init_differences() -> float:
    """Largest difference between the gathered sharded init and a cpu-built model's weights."""
    model = sharded(FSDPConfig(sharding_strategy='FULL_SHARD'), vocab=VOCAB + 1)  # an uneven wte shard too
    reference = dict(tiny_model('cpu', vocab=VOCAB + 1).named_parameters())
    names = {unwrapped_name(n) for n, _ in model.named_parameters()}
    assert names == set(reference), names ^ set(reference)
    return max(float((p.full_tensor() - reference[unwrapped_name(n)]).abs().max()) for n, p in model.named_parameters())


def deep_narrow_fraction() -> tuple[float, int]:
    """(local / total parameter numel, largest local parameter numel) for 80 layers of width 64 on meta."""
    model = sharded(FSDPConfig(sharding_strategy='FULL_SHARD'), n_layers=80, d_model=64, vocab=128)
    local = sum(p.to_local().numel() for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())
    return local / total, max(p.to_local().numel() for p in model.parameters())


def logits_dtypes() -> dict[str, torch.dtype]:
    """The dtype blocks compute in (no autocast) under each mixed_precision setting with precision amp_bf16."""
    dtypes = {}
    for setting in ('PURE', 'DEFAULT', 'FULL'):
        fsdp = FSDPConfig(mixed_precision=setting)
        model = parallelize(tiny_model('meta'), fsdp, build_mesh(fsdp, WORLD, 'cpu'), precision='amp_bf16')
        logits = model(input_ids=global_batches()[0]).logits
        logits.float().sum().backward()  # the reduce-scatter runs in the reduce dtype (bf16 for PURE) on gloo too
        dtypes[setting] = logits.dtype
    return dtypes


def _rank_main(rank: int, world_size: int, results: dict) -> None:
    torch.set_num_threads(1)
    for name, keys, microbatches, compile_config in VARIANTS:
        results[(rank, name)] = train(sharded(FSDPConfig(**keys), compile_config), rank, world_size, microbatches)
    results[(rank, 'compiled graphs, graph breaks')] = (counters['stats']['unique_graphs'],
                                                         sum(counters['graph_break'].values()))
    results[(rank, 'logits dtype')] = logits_dtypes()
    results[(rank, 'meta init')] = meta_init_differences()
    results[(rank, 'deep narrow')] = deep_narrow_fraction()


def run_two_ranks(deadline_s: float = 150) -> dict:
    return collect_from_ranks(_rank_main, WORLD, timeout=deadline_s)


@pytest.fixture(scope='module')
def two_rank_results() -> dict:
    return run_two_ranks()


@pytest.fixture(scope='module')
def one_rank_run() -> list[float]:
    return train(tiny_model('cpu'), rank=0, world=1, microbatches=1)


# ----- 2 ranks -------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize('variant', [variant[0] for variant in VARIANTS])
def test_two_ranks_give_the_one_rank_losses_and_gradient_norms(two_rank_results, one_rank_run, variant):
    assert one_rank_run[STEPS - 1] < one_rank_run[0]  # it learns, so equal losses mean equal updates
    for rank in range(WORLD):
        assert two_rank_results[(rank, variant)] == pytest.approx(one_rank_run, rel=1e-5)


@pytest.mark.slow
def test_compiled_checkpointed_sharded_blocks_compile_without_graph_breaks(two_rank_results):
    for rank in range(WORLD):
        assert two_rank_results[(rank, 'compiled graphs, graph breaks')] == (1, 0)  # one graph serves both blocks


@pytest.mark.slow
def test_mixed_precision_policy_is_applied_on_two_ranks(two_rank_results):
    expected = {'PURE': torch.bfloat16, 'DEFAULT': torch.bfloat16, 'FULL': torch.float32}
    assert two_rank_results[(0, 'logits dtype')] == two_rank_results[(1, 'logits dtype')] == expected


@pytest.mark.slow
def test_meta_init_sharded_on_two_ranks_equals_single_process_init(two_rank_results):
    assert two_rank_results[(0, 'meta init')] == 0.0
    assert two_rank_results[(1, 'meta init')] == 0.0


@pytest.mark.slow
def test_deep_narrow_model_built_on_meta_holds_half_the_weights_per_rank(two_rank_results):
    largest_full = 4 * 64 * 64  # up_proj / down_proj of width 64
    for rank in range(WORLD):
        fraction, largest_local = two_rank_results[(rank, 'deep narrow')]
        assert fraction == pytest.approx(1 / WORLD, abs=0.01)
        assert largest_local <= largest_full // WORLD


# ----- one process ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ('keys', 'world', 'shape', 'names'),
    [
        ({'sharding_strategy': 'FULL_SHARD'}, 8, (8,), ('shard',)),
        ({'sharding_strategy': 'SHARD_GRAD_OP', 'data_parallel_shard_degree': 8}, 8, (8,), ('shard',)),
        ({'sharding_strategy': 'NO_SHARD'}, 8, (8, 1), ('replicate', 'shard')),
        ({'sharding_strategy': 'HYBRID_SHARD', 'data_parallel_shard_degree': 4}, 8, (2, 4), ('replicate', 'shard')),
        ({'sharding_strategy': 'HYBRID_SHARD', 'data_parallel_replicate_degree': 2}, 8, (2, 4),
         ('replicate', 'shard')),
        ({'sharding_strategy': 'HYBRID_SHARD', 'data_parallel_replicate_degree': 2, 'data_parallel_shard_degree': 4},
         8, (2, 4), ('replicate', 'shard')),
    ],
)
def test_mesh_shape_per_strategy(keys, world, shape, names):
    assert mesh_shape(FSDPConfig(**keys), world) == (shape, names)


def test_hybrid_shard_without_degrees_shards_within_a_node(monkeypatch):
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '4')
    assert mesh_shape(FSDPConfig(sharding_strategy='HYBRID_SHARD'), 16) == ((4, 4), ('replicate', 'shard'))


@pytest.mark.parametrize(
    ('keys', 'match'),
    [
        ({'sharding_strategy': 'HYBRID_SHARD', 'data_parallel_replicate_degree': 3, 'data_parallel_shard_degree': 2},
         'must equal the world size'),
        ({'sharding_strategy': 'HYBRID_SHARD', 'data_parallel_shard_degree': 3}, 'divisor of 8'),
        ({'sharding_strategy': 'HYBRID_SHARD', 'data_parallel_replicate_degree': -1}, 'cannot both be -1'),
        ({'sharding_strategy': 'HYBRID_SHARD', 'data_parallel_shard_degree': 0}, 'positive number'),
        ({'sharding_strategy': 'FULL_SHARD', 'data_parallel_replicate_degree': 2}, 'HYBRID_SHARD'),
        ({'sharding_strategy': 'ZERO3'}, 'allowed: FULL_SHARD'),
    ],
)
def test_mesh_errors_say_what_to_set(keys, match):
    with pytest.raises(ConfigError, match=match):
        mesh_shape(FSDPConfig(**keys), 8)


@pytest.mark.parametrize(
    ('setting', 'precision', 'expected'),
    [
        ('PURE', 'amp_bf16', MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16)),
        ('DEFAULT', 'amp_bf16', MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)),
        ('FULL', 'amp_bf16', MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)),
        ('pure', 'amp_fp16', MixedPrecisionPolicy(param_dtype=torch.float16, reduce_dtype=torch.float16)),
        ('DEFAULT', 'fp32', MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)),
        ({'param_dtype': 'bf16', 'reduce_dtype': 'float32', 'output_dtype': 'fp32', 'cast_forward_inputs': False},
         'amp_bf16', MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                          output_dtype=torch.float32, cast_forward_inputs=False)),
        ({'param_dtype': 'bfloat16'}, 'fp32', MixedPrecisionPolicy(param_dtype=torch.bfloat16)),
    ],
)
def test_mixed_precision_mapping(setting, precision, expected):
    assert mixed_precision_policy(setting, precision) == expected


def test_mixed_precision_errors_and_ignored_dict_keys(caplog):
    with pytest.raises(ConfigError, match='PURE, DEFAULT, FULL'):
        mixed_precision_policy('HALF')
    with pytest.raises(ConfigError, match="unknown key 'fsdp_config.mixed_precision.param_type'"):
        mixed_precision_policy({'param_type': 'bf16'})
    with pytest.raises(ConfigError, match='param_dtype'):
        mixed_precision_policy({'param_dtype': 'int8'})
    with caplog.at_level(logging.WARNING):
        policy = mixed_precision_policy({'param_dtype': 'bf16', 'buffer_dtype': 'bf16'})
    assert policy == MixedPrecisionPolicy(param_dtype=torch.bfloat16)
    assert 'buffer_dtype has no FSDP2 equivalent' in caplog.text


def test_activation_checkpointing_wraps_every_nth_block():
    model = parallelize(tiny_model(n_layers=5), FSDPConfig(activation_checkpointing=True,
                                                           activation_checkpointing_every_n_layers=2), mesh=None)
    wrapped = [isinstance(block, CheckpointWrapper) for block in model.transformer.blocks]
    assert wrapped == [True, False, True, False, True]
    ids = torch.randint(0, VOCAB, (2, 8))
    model(input_ids=ids).logits.sum().backward()  # a checkpointed block still trains
    assert model.transformer.blocks[0]._checkpoint_wrapped_module.attn.Wqkv.weight.grad is not None


def test_activation_cpu_offload_wraps_the_selected_blocks():
    model = parallelize(tiny_model(n_layers=2), FSDPConfig(activation_cpu_offload=True), mesh=None)
    assert all(isinstance(block, OffloadWrapper) for block in model.transformer.blocks)


def test_reentrant_activation_checkpointing_is_rejected():
    fsdp = FSDPConfig(activation_checkpointing=True, activation_checkpointing_reentrant=True)
    with pytest.raises(ConfigError, match='activation_checkpointing_reentrant: true is not supported'):
        parallelize(tiny_model(), fsdp, mesh=None)


def test_fsdp1_knobs_warn_once_each(caplog):
    fsdp = FSDPConfig(limit_all_gathers=False, backward_prefetch='BACKWARD_POST', use_orig_params=False,
                      sync_module_states=True, forward_prefetch=True)
    with caplog.at_level(logging.WARNING, logger='llmfoundry.train.parallel'):
        parallelize(tiny_model(), fsdp, mesh=None)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and all('no-op on FSDP2' in line for line in lines)
    for key in ('limit_all_gathers', 'backward_prefetch', 'use_orig_params', 'sync_module_states'):
        assert sum(key in line for line in lines) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='llmfoundry.train.parallel'):
        parallelize(tiny_model(), FSDPConfig(), mesh=None)
    assert not caplog.records  # defaults say nothing


def test_compile_config_compiles_each_block_in_place_without_renaming():
    model = tiny_model(n_layers=2)
    names = [n for n, _ in model.named_parameters()]
    parallelize(model, FSDPConfig(activation_checkpointing=True), mesh=None, compile_config={'dynamic': False})
    assert all(block._compiled_call_impl is not None for block in model.transformer.blocks)
    assert [unwrapped_name(n) for n, _ in model.named_parameters()] == names


def test_one_process_materialise_equals_cpu_init():
    model = parallelize(tiny_model('meta'), FSDPConfig(activation_checkpointing=True), mesh=None)
    reference = dict(tiny_model('cpu').named_parameters())
    for name, param in model.named_parameters():
        assert torch.equal(param, reference[unwrapped_name(name)]), name


def test_find_blocks_finds_decoder_layers_of_any_model():
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    mpt = parallelize(tiny_model(n_layers=3), FSDPConfig(activation_checkpointing=True), mesh=None)
    assert find_blocks(mpt) is mpt.transformer.blocks  # still found once wrapped for checkpointing
    neox = AutoModelForCausalLM.from_config(GPTNeoXConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                                                          num_hidden_layers=3, num_attention_heads=4))
    assert find_blocks(neox) is neox.gpt_neox.layers  # named in _no_split_modules

    class Plain(torch.nn.Module):  # no _no_split_modules: the longest list of one class
        def __init__(self) -> None:
            super().__init__()
            self.heads = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.ReLU()])
            self.layers = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(3))
            self.extra = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(2))

    plain = Plain()
    assert find_blocks(plain) is plain.layers
    assert find_blocks(torch.nn.Linear(2, 2)) is None
    with pytest.raises(ConfigError, match='fsdp_config needs a model made of repeated blocks'):
        parallelize(torch.nn.Linear(2, 2), FSDPConfig(), mesh=None)
