"""precision: amp_fp8: which Linear layers become torchao's Float8Linear, fp8_config, the refusal without a float8
GPU, and (on CPU, where torch runs float8 matmuls too) the numerics of a converted forward/backward against bf16.
The `gpu` tests train through the real entry point: amp_fp8 against amp_bf16, and FSDP2's float8 all-gather."""

from __future__ import annotations

import ast
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from config_stub import stub_train_config
from ranks import collect_from_ranks
from test_train_e2e import MPT_SIZE, TINY_YAML, overrides, read_metrics, train_losses
from tiny_hf import TINY_CONFIGS
from torch import nn
from torchao.float8.config import ScalingGranularity, e4m3_dtype, e5m2_dtype
from torchao.float8.float8_linear import Float8Linear
from transformers import LlamaForCausalLM

import llmfoundry
from llmfoundry.config.schema import FP8Config, TrainConfig
from llmfoundry.config.validation import ConfigError
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.train.entry import main as train
from llmfoundry.train.float8 import after_optimizer_step, convert_model, float8_linear_config, float8_targets
from llmfoundry.train.parallel import build_mesh, parallelize
from llmfoundry.train.preflight import check_precision

NO_FLOAT8_GPU = (
    'Config error: precision: amp_fp8 needs an NVIDIA GPU with float8 tensor cores (compute capability '
    '8.9 or newer: Ada, Hopper, Blackwell); this run trains on cpu{}. Use precision: amp_bf16 here.'
)


def train_config(precision: str = 'amp_fp8', **keys) -> TrainConfig:
    return stub_train_config(precision=precision, compile_config={}, **keys)


def tiny_mpt(hidden_ratio: float = 4, **config) -> MPTForCausalLM:
    """d_model 64 with an untied head (64 x 64: divisible by 16, so only the head rule keeps it in bf16)."""
    torch.manual_seed(0)
    config = {'tie_word_embeddings': False, **config}
    return MPTForCausalLM(MPTConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=64, max_seq_len=32, no_bias=True,
                                    expansion_ratio=hidden_ratio, attn_config={'attn_impl': 'torch'}, **config))


def block_names(prefix: str, *layers: str) -> set[str]:
    """`layers` of both blocks of a 2-layer model."""
    return {f'{prefix}.{index}.{layer}' for index in range(2) for layer in layers}


def test_mpt_conversion_keeps_the_head_embeddings_and_odd_sized_layers_in_bf16():
    model = tiny_mpt(hidden_ratio=1.125)  # FFN hidden 72: not a multiple of 16
    names = block_names('transformer.blocks', 'attn.Wqkv', 'attn.out_proj')
    assert set(float8_targets(model, 64)) == names
    assert float8_targets(model, 80) == []  # the size rule: d_model 64 < 80
    assert float8_targets(model, FP8Config().min_features) == []  # default 2048: a d_model 64 model gains nothing
    keys = set(model.state_dict())

    converted = convert_model(model, train_config(fp8_config={'min_features': 64}))

    assert set(converted) == names
    assert {name for name, module in model.named_modules() if isinstance(module, Float8Linear)} == names
    kept = {name for name, module in model.named_modules() if type(module) is nn.Linear}
    assert kept == {'lm_head'} | block_names('transformer.blocks', 'ffn.up_proj', 'ffn.down_proj')
    assert type(model.transformer.wte) is nn.Embedding
    assert set(model.state_dict()) == keys  # the same keys as amp_bf16's checkpoints


def test_llama_conversion_follows_the_same_rule():
    model = LlamaForCausalLM(TINY_CONFIGS['llama'])  # hidden 16, k/v projections 16 -> 8 (two KV heads of 4)
    assert set(float8_targets(model, 16)) == block_names(
        'model.layers', 'self_attn.q_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'
    )
    assert float8_targets(model, 32) == []


def test_other_precisions_convert_nothing():
    model = tiny_mpt()
    assert convert_model(model, train_config('amp_bf16')) == []
    assert not any('Float8' in type(module).__name__ for module in model.modules())


def test_recipes_map_to_torchao_configs():
    tensorwise = float8_linear_config(FP8Config(enable_fsdp_float8_all_gather=True))
    assert tensorwise.cast_config_weight.scaling_granularity == ScalingGranularity.TENSORWISE
    assert tensorwise.cast_config_grad_output.target_dtype == e5m2_dtype  # HYBRID, TransformerEngine's default
    assert tensorwise.enable_fsdp_float8_all_gather and not tensorwise.round_scales_to_power_of_2
    e4m3 = float8_linear_config(FP8Config(fp8_format='e4m3'))
    assert e4m3.cast_config_grad_output.target_dtype == e4m3.cast_config_grad_output_for_grad_weight.target_dtype
    assert e4m3.cast_config_grad_output.target_dtype == e4m3_dtype
    rowwise = float8_linear_config(FP8Config(recipe='rowwise'))
    assert rowwise.cast_config_weight.scaling_granularity == ScalingGranularity.AXISWISE
    assert rowwise.round_scales_to_power_of_2 and not rowwise.enable_fsdp_float8_all_gather
    high_precision_grad_weight = float8_linear_config(FP8Config(recipe='rowwise_with_gw_hp'))
    assert high_precision_grad_weight.cast_config_input_for_grad_weight.scaling_type.value == 'disabled'


@pytest.mark.parametrize(
    'keys, message',
    [
        (
            {'recipe': 'blockwise'},
            "fp8_config.recipe='blockwise' is invalid; allowed: tensorwise, rowwise, rowwise_with_gw_hp.",
        ),
        (
            {'recipe': 'rowwise', 'enable_fsdp_float8_all_gather': True},
            'fp8_config.enable_fsdp_float8_all_gather: true needs recipe: tensorwise (torchao gathers float8 '
            'weights with one scale per tensor only); recipe is rowwise.',
        ),
        (
            {'precompute_float8_dynamic_scale_for_fsdp': True},
            'fp8_config.precompute_float8_dynamic_scale_for_fsdp: true needs enable_fsdp_float8_all_gather: true (it '
            'precomputes the scales of gathered weights).',
        ),
        (
            {'min_features': 100},
            'fp8_config.min_features=100 must be a positive multiple of 16 (float8 matmuls need '
            'sizes divisible by 16).',
        ),
        ({'fp8_format': 'E5M2'}, "fp8_config.fp8_format='E5M2' is invalid; allowed: HYBRID, E4M3."),
        (
            {'recipe': 'rowwise', 'fp8_format': 'HYBRID'},
            'fp8_config.fp8_format: HYBRID (e5m2 gradients) needs recipe: tensorwise; the rowwise recipe casts '
            'gradients to e4m3: remove fp8_format or set it to E4M3.',
        ),
        ({'recpie': 'rowwise'}, "unknown key 'fp8_config.recpie'"),
    ],
)
def test_bad_fp8_config_is_a_config_error(keys, message):
    with pytest.raises(ConfigError) as error:
        train_config(fp8_config=keys)
    assert str(error.value).startswith(message)


def test_preflight_refuses_amp_fp8_without_a_float8_gpu_and_fp8_config_without_amp_fp8():
    with pytest.raises(ConfigError) as error:
        check_precision(train_config(), torch.device('cpu'))
    no_gpu = '' if torch.cuda.is_available() else ' (no CUDA GPU here)'
    assert 'Config error: ' + str(error.value) == NO_FLOAT8_GPU.format(no_gpu)
    with pytest.raises(
        ConfigError,
        match='^fp8_config is set but precision is amp_bf16: set precision: amp_fp8, or remove fp8_config.$',
    ):
        check_precision(train_config('amp_bf16', fp8_config={}), torch.device('cpu'))
    with pytest.raises(ConfigError, match=r'^fp8_config.enable_fsdp_float8_all_gather: true needs fsdp_config'):
        check_precision(train_config(fp8_config={'enable_fsdp_float8_all_gather': True}), torch.device('cpu'))
    check_precision(train_config('amp_bf16'), torch.device('cpu'))  # no float8: nothing to check


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal on a machine without a CUDA GPU')
def test_amp_fp8_run_on_cpu_fails_in_one_line_before_building_anything(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    building = []
    monkeypatch.setattr('llmfoundry.train.setup.build_model', lambda section: building.append(section))
    code = train(
        [str(TINY_YAML), 'precision=amp_fp8', 'variables.data_local=./no-data', f'save_folder={tmp_path / "r"}']
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and lines == [NO_FLOAT8_GPU.format(' (no CUDA GPU here)')]  # before the data check, too
    assert not building and not (tmp_path / 'r').exists()


def test_torchao_is_imported_only_inside_functions():
    """Runs without amp_fp8 must not pay for importing torchao through our code: no module of ours imports it at
    module level. (transformers' torchao quantizer imports it anyway whenever torchao is installed, so a check of
    sys.modules after importing the trainer would measure transformers, not us.)"""
    top_level = []
    for path in sorted(Path(llmfoundry.__file__).parent.rglob('*.py')):
        for node in ast.parse(path.read_text(encoding='utf-8')).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
            top_level += [f'{path.name}: {n}' for n in names if n.split('.')[0] == 'torchao']
    assert top_level == []


@pytest.mark.parametrize('recipe', ['tensorwise', 'rowwise'])
def test_float8_forward_and_backward_on_cpu_track_bf16(recipe):
    """torch runs the float8 matmuls on CPU: a converted model's loss, logits and a converted weight's gradient
    against the same weights in bf16 (both under bf16 autocast, as the trainer runs amp_fp8)."""
    reference = tiny_mpt()
    model = copy.deepcopy(reference)
    assert len(convert_model(model, train_config(fp8_config={'min_features': 64, 'recipe': recipe}))) == 8
    ids = torch.randint(0, 64, (4, 32), generator=torch.Generator().manual_seed(1))
    results = []
    for net in (reference, model):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = net(ids, labels=ids)
        out.loss.backward()
        results.append((out.loss.item(), out.logits.float(), net.transformer.blocks[0].ffn.up_proj.weight.grad))
    (loss_bf16, logits_bf16, grad_bf16), (loss_fp8, logits_fp8, grad_fp8) = results
    # e4m3 keeps 3 mantissa bits (relative rounding up to 2^-4 per operand). Measured on this tiny model: logits
    # differ by 14-18% of their largest entry, far above bf16's 2^-8 (so the float8 path did run); the loss, a mean
    # over 8,192 log-probabilities whose rounding errors largely cancel, by 0.005-0.2%; gradient cosine 0.98.
    logit_error = (logits_fp8 - logits_bf16).abs().max().item() / logits_bf16.abs().max().item()
    assert 2**-8 < logit_error < 4 * 2**-4, f'{recipe}: logits differ by {logit_error:.3f} of the largest'
    assert abs(loss_fp8 - loss_bf16) < 0.02 * loss_bf16, f'{recipe}: loss {loss_fp8} (fp8) vs {loss_bf16} (bf16)'
    cosine = nn.functional.cosine_similarity(grad_fp8.flatten(), grad_bf16.flatten(), dim=0).item()
    assert cosine > 0.95, f'{recipe}: up_proj gradient cosine similarity {cosine:.4f}'


FSDP_FLOAT8 = {
    'min_features': 64,
    'enable_fsdp_float8_all_gather': True,
    'precompute_float8_dynamic_scale_for_fsdp': True,
}


def sharded_float8_steps(rank: int, world_size: int, results: dict) -> None:
    """3 SGD steps of a meta-built tiny MPT sharded by FSDP2 with float8 all-gather; this rank's losses."""
    config = train_config(fsdp_config={}, fp8_config=FSDP_FLOAT8)
    model = meta_mpt()
    convert_model(model, config)
    parallelize(model, config.fsdp_config, build_mesh(config.fsdp_config, world_size, 'cpu'), precision='amp_fp8')
    weight = model.transformer.blocks[0].attn.Wqkv.weight
    results[f'weight type {rank}'] = type(weight.to_local()).__name__
    results[rank] = float8_steps(model, config, rank_ids(rank))


def meta_mpt() -> MPTForCausalLM:
    """Built on meta: materialised from per-parameter seeds (drawn from torch's seed), the same weights on any
    number of ranks."""
    return tiny_mpt(init_device='meta', tie_word_embeddings=True)


def rank_ids(rank: int) -> torch.Tensor:
    return torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(rank))


def float8_steps(model: nn.Module, config: TrainConfig, ids: torch.Tensor) -> list[float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)  # Adam would turn float8 noise into sign flips
    losses = []
    for _ in range(3):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        after_optimizer_step(config, model)
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_fsdp2_float8_all_gather_on_two_cpu_ranks_tracks_one_process():
    """The float8 all-gather path (weights cast before the gather, scales precomputed after each step) on 2 gloo
    ranks against one unsharded float8 process on both ranks' rows."""
    results = collect_from_ranks(sharded_float8_steps, 2)
    assert results['weight type 0'] == results['weight type 1'] == 'WeightWithDynamicFloat8CastTensor'
    config = train_config(fp8_config={'min_features': 64})
    model = meta_mpt()
    convert_model(model, config)
    parallelize(model, None, None, precision='amp_fp8')  # materialises the meta weights
    reference = float8_steps(model, config, torch.cat([rank_ids(0), rank_ids(1)]))
    # Each step's global loss is the mean of the ranks' (equal token counts), with the same initial weights; but
    # float8 scales of the activations come from each rank's rows instead of all rows, and that rounding compounds
    # over the steps. Measured: 0.2%, 1.1%, 1.7% at steps 0-2; a gradient summed instead of averaged (a step twice
    # as long) is off by 6% and 10.5% at steps 1-2.
    for step, expected in enumerate(reference):
        sharded = (results[0][step] + results[1][step]) / 2
        assert abs(sharded - expected) < 0.04 * expected, f'step {step}: 2 ranks {sharded}, one process {expected}'
    assert reference[-1] < reference[0]


# ----- GPU: the real entry point, a few steps ------------------------------------------------------------------
FP8_TINY = ['fp8_config={min_features: 64}', *MPT_SIZE]  # d_model 64: every block Linear runs in float8


def _losses(run_folder) -> list[float]:
    return [loss for _, loss in sorted(train_losses(read_metrics(run_folder)).items())]


@pytest.mark.gpu
@pytest.mark.slow
def test_amp_fp8_trains_like_amp_bf16_on_one_gpu(mds_dir, tokenizer_dir, tmp_path):
    runs = {}
    for precision, extra in (('amp_bf16', MPT_SIZE), ('amp_fp8', FP8_TINY)):
        folder = tmp_path / precision
        assert (
            train(
                [
                    str(TINY_YAML),
                    *overrides(mds_dir, tokenizer_dir, folder, f'precision={precision}', 'compile_config={}', *extra),
                ]
            )
            == 0
        )
        runs[precision] = _losses(folder)
    assert len(runs['amp_fp8']) == 10
    for step, (fp8, bf16) in enumerate(zip(runs['amp_fp8'], runs['amp_bf16'])):
        assert abs(fp8 - bf16) < 0.03 * bf16, f'step {step}: loss {fp8} (amp_fp8) vs {bf16} (amp_bf16)'
    assert runs['amp_fp8'][-1] < runs['amp_fp8'][0]


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs 2 GPUs')
def test_fsdp2_float8_all_gather_on_two_gpus_matches_one(mds_dir, tokenizer_dir, tmp_path):
    fsdp = ['fsdp_config={sharding_strategy: FULL_SHARD}', 'compile_config={}']
    one = tmp_path / 'one'
    assert train([str(TINY_YAML), *overrides(mds_dir, tokenizer_dir, one, 'precision=amp_fp8', *FP8_TINY)]) == 0
    two = tmp_path / 'two'
    gather = (
        'fp8_config={min_features: 64, enable_fsdp_float8_all_gather: true, '
        'precompute_float8_dynamic_scale_for_fsdp: true}'
    )
    command = [
        sys.executable,
        '-m',
        'llmfoundry.cli',
        'train',
        str(TINY_YAML),
        '--nproc',
        '2',
        *overrides(mds_dir, tokenizer_dir, two, 'precision=amp_fp8', *MPT_SIZE, gather, *fsdp),
    ]
    subprocess.run(command, check=True, timeout=600)
    for step, (sharded, single) in enumerate(zip(_losses(two), _losses(one), strict=True)):
        assert abs(sharded - single) < 0.03 * single, f'step {step}: loss {sharded} (2 GPUs) vs {single} (1 GPU)'
