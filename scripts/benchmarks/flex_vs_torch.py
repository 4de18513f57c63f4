"""Flex vs torch attention, with the cost of FlexAttention's block mask reported on its own.

The block mask is built once per forward and shared by every layer (`flex_block_mask` in models/mpt/attention.py);
without packed documents or padding it is also reused across forwards of the same shape. The table shows:
  - the forward (CPU: inference, PyTorch has no CPU backward for flex; CUDA: forward + backward) of the torch and
    flex kernels, plain (mask reused) and with sequence_id (mask built every forward);
  - one create_block_mask build, plain and per batch (sequence_id), and what building it in every layer of every
    forward (the previous behaviour) cost per forward: n_layers builds.
Times are medians of --steps, the implementations interleaved step by step.

CPU:  python scripts/benchmarks/flex_vs_torch.py
GPU:  python scripts/benchmarks/flex_vs_torch.py --device cuda --dtype bf16 --seq-len 2048 --d-model 2048 \
          --n-layers 24
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
from model_throughput import machine_description  # this folder is on sys.path when run as a script

from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.models.mpt.attention import AttentionContext, flex_block_mask


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seq-len', type=int, default=512)
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--d-model', type=int, default=256)
    parser.add_argument('--n-layers', type=int, default=4)
    parser.add_argument('--vocab', type=int, default=8192)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', choices=('fp32', 'bf16'), default='fp32', help='bf16: autocast over fp32 weights')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    return parser.parse_args()


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def model_for(impl: str, args: argparse.Namespace, device: torch.device) -> MPTForCausalLM:
    torch.manual_seed(0)
    config = MPTConfig(d_model=args.d_model, n_heads=max(1, args.d_model // 64), n_layers=args.n_layers,
                       vocab_size=args.vocab, max_seq_len=args.seq_len,
                       attn_config={'attn_impl': impl, 'alibi': True, 'attn_uses_sequence_id': True})
    return MPTForCausalLM(config).to(device)


def forward_fn(model: MPTForCausalLM, ids: torch.Tensor, sequence_id: torch.Tensor | None, args, device):
    """One forward (CPU, no grad) or forward + backward (CUDA)."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == 'bf16')
    train = device.type == 'cuda'

    def run() -> None:
        with autocast, (contextlib.nullcontext() if train else torch.no_grad()):
            logits = model(ids, sequence_id=sequence_id).logits
        if train:
            logits.float().sum().backward()
            model.zero_grad(set_to_none=True)

    return run


def mask_build_fn(args, device: torch.device, sequence_id: torch.Tensor | None):
    """One create_block_mask build as the model does it (the cache emptied first for the plain mask)."""
    from llmfoundry.models.mpt import attention

    ctx = AttentionContext(query_len=args.seq_len, past_len=0, alibi_slopes=None, rotary=None, key_padding_mask=None,
                           sequence_id=sequence_id, sliding_window=-1, softcap=None, impl='flex')

    def run() -> None:
        attention._STATIC_BLOCK_MASKS.clear()
        flex_block_mask(ctx, args.batch_size, device)

    return run


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ids = torch.randint(0, args.vocab, (args.batch_size, args.seq_len), device=device)
    half = args.seq_len // 2  # two packed documents per row
    sequence_id = (torch.arange(args.seq_len, device=device) >= half).long().expand(args.batch_size, -1)
    torch_model, flex_model = model_for('torch', args, device), model_for('flex', args, device)
    rows = {
        'torch forward': forward_fn(torch_model, ids, None, args, device),
        'flex forward (mask reused across forwards)': forward_fn(flex_model, ids, None, args, device),
        'torch forward, sequence_id': forward_fn(torch_model, ids, sequence_id, args, device),
        'flex forward, sequence_id (mask built once)': forward_fn(flex_model, ids, sequence_id, args, device),
        'create_block_mask, causal': mask_build_fn(args, device, None),
        'create_block_mask, sequence_id': mask_build_fn(args, device, sequence_id),
    }
    for fn in rows.values():  # warm-up (CUDA: compiles flex)
        fn()
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.steps):
        for name, fn in rows.items():
            times[name].append(timed(fn, device))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(machine_description(device))
    mode = 'forward + backward' if device.type == 'cuda' else 'forward (inference)'
    print(f'MPT d_model={args.d_model} n_layers={args.n_layers} alibi, batch {args.batch_size} x seq {args.seq_len}, '
          f'{args.dtype}, {mode}; medians of {args.steps}')
    print('| what | ms |')
    print('|---|---|')
    for name, value in medians.items():
        print(f'| {name} | {value * 1e3:.2f} |')
    for kind in ('causal', 'sequence_id'):
        print(f'| before: mask built in every layer, {kind} (n_layers x build) | '
              f'{args.n_layers * medians[f"create_block_mask, {kind}"] * 1e3:.2f} |')


if __name__ == '__main__':
    main()
