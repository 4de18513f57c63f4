"""Peak memory and step time of one training step (forward + backward) with torch's cross-entropy on full logits
(`plain`, model.loss_fn: torch_crossentropy) vs the chunked linear + cross-entropy (`fused`,
model.loss_fn: fused_crossentropy), on a small MPT with a 50k vocabulary, where the logits dominate memory.

Each row runs in a fresh subprocess, so that peak memory belongs to that path alone: on CPU the process's peak RSS
(getrusage) above its peak before the first step (weights, inputs, libraries); on CUDA
torch.cuda.max_memory_allocated above the memory allocated before the step. The step time is the median of
--steps steps after one warm-up step; the rows' subprocesses alternate --repeats times (shared machines drift) and
the table shows the median over the repeats.

CPU:  python scripts/benchmarks/fused_ce.py
GPU:  python scripts/benchmarks/fused_ce.py --device cuda --dtype bf16 --seq-len 2048 --batch-size 8 --d-model 2048
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from model_throughput import machine_description  # this folder is on sys.path when run as a script

from llmfoundry.models.fused_loss import LABELS_KWARG, install_fused_loss
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
from llmfoundry.train.trainer import token_losses_sum

PATHS = ('plain', 'fused')
MIB = 1 << 20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--vocab', type=int, default=50368)
    parser.add_argument('--d-model', type=int, default=128)
    parser.add_argument('--n-layers', type=int, default=2)
    parser.add_argument('--seq-len', type=int, default=512)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', choices=('fp32', 'bf16'), default='fp32', help='bf16: autocast over fp32 weights')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--repeats', type=int, default=3, help='subprocesses per path, alternating')
    parser.add_argument('--row', choices=PATHS, help=argparse.SUPPRESS)  # internal: run one path, print JSON
    return parser.parse_args()


def _allocated(device: torch.device) -> float:
    """Bytes: CUDA's allocated memory now, or the process's peak RSS so far (ru_maxrss is KiB on Linux)."""
    if device.type == 'cuda':
        return torch.cuda.memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak(device: torch.device) -> float:
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_row(args: argparse.Namespace) -> dict[str, float]:
    """One path in this process: {'peak_mib': ..., 'extra_mib': ..., 'step_s': ..., 'loss': ...}."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MPTForCausalLM(MPTConfig(d_model=args.d_model, n_heads=4, n_layers=args.n_layers, vocab_size=args.vocab,
                                     max_seq_len=args.seq_len, attn_config={'attn_impl': 'torch'})).to(device)
    if args.row == 'fused':
        install_fused_loss(model)
    ids = torch.randint(0, args.vocab, (args.batch_size, args.seq_len), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == 'bf16')

    def step() -> float:
        with autocast:
            if args.row == 'fused':
                loss = model(input_ids=ids, **{LABELS_KWARG: ids}).loss_sum
            else:
                loss = token_losses_sum(model(input_ids=ids).logits, ids)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss.item()

    model.zero_grad(set_to_none=True)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = _allocated(device)
    loss = step()  # warm-up; its peak is the step's peak
    extra = _peak(device) - before
    times = []
    for _ in range(args.steps):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        step()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return {'peak_mib': _peak(device) / MIB, 'extra_mib': extra / MIB, 'step_s': statistics.median(times),
            'loss': loss}


def main() -> None:
    args = parse_args()
    if args.row:
        print(json.dumps(run_row(args)))
        return
    runs: dict[str, list[dict[str, float]]] = {path: [] for path in PATHS}
    for _ in range(args.repeats):
        for path in PATHS:
            command = [sys.executable, __file__, *sys.argv[1:], '--row', path]
            runs[path].append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
    rows = {path: {key: statistics.median(run[key] for run in path_runs) for key in path_runs[0]}
            for path, path_runs in runs.items()}
    tokens = args.batch_size * args.seq_len
    logits_mib = tokens * args.vocab * 4 / MIB
    print(machine_description(torch.device(args.device)))
    print(f'MPT d_model={args.d_model} n_layers={args.n_layers} vocab={args.vocab}, batch {args.batch_size} x seq '
          f'{args.seq_len} = {tokens} tokens, {args.dtype}, {args.threads} threads; float32 logits alone: '
          f'{logits_mib:.0f} MiB')
    memory = 'peak RSS' if args.device == 'cpu' else 'peak allocated'
    print(f'medians over {args.repeats} processes per path')
    print(f"| loss_fn | {memory} MiB | step's extra MiB | step s | summed loss |")
    print('|---|---|---|---|---|')
    for path, row in rows.items():
        print(f"| {path} | {row['peak_mib']:.0f} | {row['extra_mib']:.0f} | {row['step_s']:.3f} | {row['loss']:.4f} |")


if __name__ == '__main__':
    main()
