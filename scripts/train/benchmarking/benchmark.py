"""Benchmark (not a test): tokens/s/GPU, MFU and peak memory of MPT training, one row per variant.

The full sweep on one H100/H200 (MPT-1B and MPT-7B at seq 2048, the StoryWriter shape MPT-7B at 65536 with flex
attention; bf16/fp8 x fused CE off/on x compile off/on x activation checkpointing off/on, 34 rows: at 65536 only
bf16/fp8 compiled, checkpointed and with fused CE; about 8 minutes, mostly first compilations: not yet measured):

    python scripts/train/benchmarking/benchmark.py --sweep --steps 8

One YAML, choosing the variants:

    python scripts/train/benchmarking/benchmark.py --yaml yamls/pretrain/mpt-1b.yaml --seq-len 2048 --device-batch 8 \
        --precision amp_bf16,amp_fp8 --fused-ce both --compile on --act-ckpt off --steps 8
    # a CPU smoke run (amp_fp8 rows print why they cannot run there):
    python scripts/train/benchmarking/benchmark.py --yaml yamls/pretrain/mpt-tiny-cpu.yaml --seq-len 128 \
        --device-batch 2 --steps 4 --precision fp32,amp_fp8 --compile off

Every variant runs in this process through the trainer's own path: the YAML and overrides -> TrainConfig ->
`prepare_model` (build, amp_fp8's float8 conversion, activation checkpointing, torch.compile) -> `Trainer.fit`
on random token rows already in memory (no data loader, no checkpoints). Throughput is the speed monitor's window
over the last steps (the first ones compile); MFU is against the chip's dense bf16 peak for every row, fp8 included,
as llm-foundry's published table (8x H100, bf16, seq 2048: MPT-1B 41.82%, MPT-7B 46.44%) is; peak GB is
torch.cuda's peak allocated memory. MPT-7B does not fit one GPU with AdamW (16 bytes per parameter), so the sweep
keeps 8 of its 32 blocks (4 at seq 65536): every block has the same shape, so tokens/s/GPU scales by the FLOPs
ratio and MFU is nearly the full model's (the head and embedding weigh a little more).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from llmfoundry.callbacks.memory_monitor import MemoryMonitor
from llmfoundry.callbacks.peak_flops import peak_flops
from llmfoundry.callbacks.speed_monitor import SpeedMonitor
from llmfoundry.config.loading import load_train_config
from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.time import Time
from llmfoundry.interfaces import DistInfo, LoggerDestination, MetricLogger, TrainState
from llmfoundry.optim.optimizers import build_optimizer
from llmfoundry.optim.schedulers import build_scheduler
from llmfoundry.train.algorithms import build_gradient_clipping
from llmfoundry.train.float8 import float8_hardware_problem
from llmfoundry.train.preflight import check_precision
from llmfoundry.train.setup import prepare_model
from llmfoundry.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[3]
PUBLISHED_MFU = {'mpt-1b': 41.82, 'mpt-7b': 46.44}  # llm-foundry's table: 8x H100 80GB, bf16, seq 2048


@dataclass(frozen=True)
class Shape:
    """A YAML at one sequence length and device batch; `layers` keeps only that many blocks (None: all)."""

    yaml: str
    seq_len: int
    device_batch: int
    attn_impl: str
    layers: int | None = None
    long_context: bool = False  # only the rows that fit and make sense at 64k: compiled, checkpointed, fused CE

    @property
    def name(self) -> str:
        return Path(self.yaml).stem


SWEEP = [
    Shape('yamls/pretrain/mpt-1b.yaml', 2048, 8, 'torch'),
    Shape('yamls/pretrain/mpt-7b.yaml', 2048, 4, 'torch', layers=8),
    Shape('yamls/pretrain/mpt-7b.yaml', 65536, 1, 'flex', layers=4, long_context=True),
]


@dataclass(frozen=True)
class Variant:
    precision: str
    fused_ce: bool
    compiled: bool
    act_ckpt: bool


class LastValues(LoggerDestination):
    """The newest value of every metric the run logged."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def log_metrics(self, metrics: dict[str, float], timestamp) -> None:
        self.values.update({key: value for key, value in metrics.items() if value is not None})


def overrides(shape: Shape, variant: Variant, steps: int) -> list[str]:
    chosen = [
        f'variables.max_seq_len={shape.seq_len}',
        f'max_duration={steps}ba',
        f'precision={variant.precision}',
        f'global_train_batch_size={shape.device_batch}',
        f'device_train_microbatch_size={shape.device_batch}',
        f'model.attn_config.attn_impl={shape.attn_impl}',
        'eval_interval=100000ba',
        'eval_first=false',
        'callbacks=null',
        'loggers=null',
        'save_folder=null',
        f'model.loss_fn={"fused_crossentropy" if variant.fused_ce else "torch_crossentropy"}',
        f'compile_config={"{}" if variant.compiled else "null"}',
        f'fsdp_config={"{activation_checkpointing: true}" if variant.act_ckpt else "null"}',
    ]
    if shape.layers is not None:
        chosen.append(f'model.n_layers={shape.layers}')
    return chosen


def measure(shape: Shape, variant: Variant, steps: int, device: torch.device) -> dict[str, float] | str:
    """One variant's speed monitor window and peak memory, or why it cannot run here."""
    config, _ = load_train_config(REPO / shape.yaml, overrides(shape, variant, steps))
    info = DistInfo(0, 1, 0, device)
    problem = float8_hardware_problem(device) if variant.precision == 'amp_fp8' else None
    if problem:
        return f'needs a GPU of compute capability 8.9+: {problem}'
    check_precision(config, device)
    torch._dynamo.reset()  # each variant compiles its own blocks (dynamo's recompile limit would fall back to eager)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    try:
        return _train(config, info, shape, steps)
    except torch.OutOfMemoryError:
        return 'out of memory'
    finally:
        gc.collect()
        if device.type == 'cuda':
            torch.cuda.empty_cache()


def _train(config: TrainConfig, info: DistInfo, shape: Shape, steps: int) -> dict[str, float]:
    device = info.device
    model, module = prepare_model(config, info)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (shape.device_batch, shape.seq_len), generator=torch.Generator().manual_seed(0))
    batch = {'input_ids': ids, 'attention_mask': torch.ones_like(ids), 'labels': ids}
    state = TrainState(
        config=config,
        model=model,
        optimizer=build_optimizer(config.optimizer, model),
        dist=info,
        max_duration=Time.parse(config.max_duration),
        run_name='benchmark',
        run_folder=Path('.'),
        device_train_batch_size=shape.device_batch,
        microbatch_size=shape.device_batch,
    )
    bf16_peak = peak_flops(torch.cuda.get_device_name(device), 'amp_bf16') if device.type == 'cuda' else None
    results = LastValues()
    window = max(1, steps // 2)  # the second half of the steps: the first ones compile and warm up
    trainer = Trainer(
        config,
        state,
        module=module,
        train_loader=[batch] * steps,
        eval_loaders=[],
        callbacks=[SpeedMonitor(window_size=window, gpu_flops_available=bf16_peak), MemoryMonitor()],
        logger=MetricLogger([results], True),
        scheduler=build_scheduler(config.scheduler),
        clipping=build_gradient_clipping(config.algorithms),
        eval_interval=Time.parse('100000ba'),
        console_interval=Time.parse(f'{steps}ba'),
    )
    trainer.fit()
    values = results.values
    return {
        'tokens/s/GPU': values.get('throughput/device/tokens_per_sec', float('nan')),
        'MFU %': 100 * values.get('throughput/device/mfu', float('nan')),
        'peak GB': values.get('memory/peak_allocated_mem', values.get('memory/peak_rss_mem', float('nan'))),
    }


def variants(args: argparse.Namespace, shape: Shape) -> list[Variant]:
    both = {'off': [False], 'on': [True], 'both': [False, True]}
    if shape.long_context:
        fused, compiled, checkpointed = [True], [True], [True]
    else:
        fused, compiled, checkpointed = both[args.fused_ce], both[args.compile], both[args.act_ckpt]
    return [Variant(*values) for values in itertools.product(args.precision.split(','), fused, compiled, checkpointed)]


def print_table(rows: list[tuple[Shape, Variant, dict[str, float] | str]], steps: int, device: str) -> None:
    print(f'\n{steps} steps per row on {device}; MFU against the dense bf16 peak for every row')
    print(
        '| model | seq | attn | precision | fused CE | compiled | act ckpt | tokens/s/GPU | MFU % | peak GB | '
        'llm-foundry MFU % (8x H100, bf16) |'
    )
    print('|---|---:|---|---|---|---|---|---:|---:|---:|---:|')
    for shape, variant, result in rows:
        model = shape.name + (f' ({shape.layers} blocks)' if shape.layers else '')
        published = PUBLISHED_MFU.get(shape.name) if shape.seq_len == 2048 else None
        head = (
            f'| {model} | {shape.seq_len} | {shape.attn_impl} | {variant.precision} | {variant.fused_ce} | '
            f'{variant.compiled} | {variant.act_ckpt} |'
        )
        reference = f' {published:.2f} |' if published else ' |'
        if isinstance(result, str):
            print(f'{head} {result} | | |{reference}')
        else:
            print(
                f'{head} {result["tokens/s/GPU"]:,.0f} | {result["MFU %"]:.2f} | {result["peak GB"]:.2f} |{reference}'
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sweep', action='store_true', help='the full matrix over MPT-1B, MPT-7B, MPT-7B at 65536')
    parser.add_argument('--yaml', default='yamls/pretrain/mpt-1b.yaml', help='relative to the repository')
    parser.add_argument('--seq-len', type=int, default=2048)
    parser.add_argument('--device-batch', type=int, default=8)
    parser.add_argument('--attn-impl', default='torch')
    parser.add_argument('--layers', type=int, default=None, help='keep only this many blocks')
    parser.add_argument('--steps', type=int, default=8)
    parser.add_argument('--precision', default='amp_bf16,amp_fp8', help='comma-separated')
    parser.add_argument('--fused-ce', choices=('on', 'off', 'both'), default='both')
    parser.add_argument('--compile', choices=('on', 'off', 'both'), default='both')
    parser.add_argument('--act-ckpt', choices=('on', 'off', 'both'), default='both')
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device('cuda', torch.cuda.current_device()) if torch.cuda.is_available() else torch.device('cpu')
    shapes = SWEEP if args.sweep else [Shape(args.yaml, args.seq_len, args.device_batch, args.attn_impl, args.layers)]
    rows = []
    for shape in shapes:
        for variant in variants(args, shape):
            rows.append((shape, variant, measure(shape, variant, args.steps, device)))
            print(f'done: {shape.name} seq {shape.seq_len} {variant}', flush=True)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
    print_table(rows, args.steps, name)


if __name__ == '__main__':
    main()
