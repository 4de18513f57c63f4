"""Training throughput (forward + backward tokens/s) of our MPT against transformers' MptForCausalLM.

Both models get the same mpt-125m-shaped weights (ours are loaded into theirs) and the same inputs; the
logits are compared before timing so that the race is between equal computations. Step times of the
implementations are interleaved round by round and the median is reported, because the machines this
runs on are shared and their load drifts.

CPU (the issue's acceptance number):
    python scripts/benchmarks/model_throughput.py
GPU (seq 2048, bf16 autocast, our torch and flex kernels against transformers):
    python scripts/benchmarks/model_throughput.py --device cuda --dtype bf16 --seq-len 2048 --batch-size 8 \
        --impls torch,flex,hf
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import transformers
from transformers import MptConfig, MptForCausalLM

from llmfoundry.models.accounting import count_parameters
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

SHAPE = {'d_model': 768, 'n_heads': 12, 'n_layers': 12, 'expansion_ratio': 4, 'vocab_size': 50432}
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}
HF = 'hf'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--seq-len', type=int, default=512)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--steps', type=int, default=2, help='timed steps per round and implementation')
    parser.add_argument('--rounds', type=int, default=3, help='rounds of interleaved timing')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='fp32',
                        help='fp32, or bf16 autocast over fp32 weights (as amp_bf16 training)')
    parser.add_argument('--impls', default=f'torch,{HF}',
                        help=f"comma list of our attn_impl values (torch, flex, flash) and '{HF}' (transformers)")
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--profile', action='store_true', help='also print a torch.profiler table per impl')
    return parser.parse_args()


def machine_description(device: torch.device) -> str:
    """CPU model, cores and library versions (and the GPU), for reporting the numbers with their machine."""
    cpu = platform.processor() or 'unknown CPU'
    with contextlib.suppress(OSError), open('/proc/cpuinfo') as f:
        cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
    lines = [
        f'CPU: {cpu}; {os.cpu_count()} cores visible, {len(os.sched_getaffinity(0))} usable, '
        f'torch threads {torch.get_num_threads()}',
        f'torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}',
    ]
    if device.type == 'cuda':
        lines.append(f'GPU: {torch.cuda.get_device_name(device)}')
    return '\n'.join(lines)


def _ours(impl: str, seq_len: int) -> MPTForCausalLM:
    attn_config = {'attn_impl': impl, 'alibi': True}
    return MPTForCausalLM(MPTConfig(**SHAPE, max_seq_len=seq_len, no_bias=True, attn_config=attn_config))


def build_models(impls: list[str], seq_len: int, device: torch.device) -> dict[str, torch.nn.Module]:
    """One of our models per attn_impl plus transformers' model, all with the same weights."""
    torch.manual_seed(0)
    state = _ours('torch', seq_len).state_dict()
    models: dict[str, torch.nn.Module] = {}
    for impl in impls:
        if impl == HF:
            model = MptForCausalLM(MptConfig(**SHAPE, max_seq_len=seq_len, no_bias=True,
                                             attn_config={'alibi': True, 'alibi_bias_max': 8}))
            result = model.load_state_dict(state, strict=False)  # their lm_head is tied to wte
            if result.unexpected_keys or set(result.missing_keys) - {'lm_head.weight'}:
                raise RuntimeError(f'state dicts differ: {result}')
            model.tie_weights()
        else:
            model = _ours(impl, seq_len)
            model.load_state_dict(state)
        models[impl] = model.to(device).train()  # dropout is 0 in both: train mode changes nothing else
    return models


def check_same_logits(models: dict[str, torch.nn.Module], input_ids: torch.Tensor, autocast) -> float:
    """Largest logit difference between any implementation and the first one."""
    with torch.no_grad(), autocast():
        logits = [model(input_ids).logits.float() for model in models.values()]
    return max((x - logits[0]).abs().max().item() for x in logits)


def make_step(model: torch.nn.Module, input_ids: torch.Tensor, autocast) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast():
            loss = model(input_ids, labels=input_ids).loss
        loss.backward()

    return step


def timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def profile_step(name: str, step: Callable[[], None]) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        step()
    sort = 'self_cuda_time_total' if torch.cuda.is_available() else 'self_cpu_time_total'
    print(f'\n--- profile: {name} (one step) ---')
    print(prof.key_averages().table(sort_by=sort, row_limit=15))


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    impls = args.impls.split(',')
    if device.type == 'cpu' and 'flex' in impls:
        raise SystemExit('flex has no backward pass on CPU (PyTorch limitation); benchmark it with --device cuda.')
    dtype = DTYPES[args.dtype]
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 else contextlib.nullcontext

    models = build_models(impls, args.seq_len, device)
    input_ids = torch.randint(0, SHAPE['vocab_size'], (args.batch_size, args.seq_len), device=device)
    print(machine_description(device))
    first = next(iter(models.values()))
    print(f'model: mpt-125m shape, {count_parameters(first):,} parameters; batch {args.batch_size} x seq '
          f'{args.seq_len}, {args.dtype}, {args.warmup} warmup + {args.rounds} rounds x {args.steps} timed steps')
    print(f'max |logit difference| between implementations: {check_same_logits(models, input_ids, autocast):.2e}')

    steps = {name: make_step(model, input_ids, autocast) for name, model in models.items()}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].extend(timed(step, device) for _ in range(args.steps))

    tokens = args.batch_size * args.seq_len
    # The median is the typical step; the best step is the least disturbed by other load on shared machines.
    rate = {name: (tokens / statistics.median(t), tokens / min(t)) for name, t in times.items()}
    label = {name: ('transformers MptForCausalLM' if name == HF else f'ours, attn_impl={name}') for name in rate}
    print(f"\n| {'implementation':<28} | {'tokens/s median':>15} | {'tokens/s best':>13} | {'ours/theirs median':>18} "
          f"| {'ours/theirs best':>16} |")
    print(f"|{'-' * 30}|{'-' * 16}:|{'-' * 14}:|{'-' * 19}:|{'-' * 17}:|")
    for name, (median, best) in rate.items():
        ratios = [f'{median / rate[HF][0]:.2f}', f'{best / rate[HF][1]:.2f}'] if HF in rate and name != HF else ['', '']
        print(f'| {label[name]:<28} | {median:>15.1f} | {best:>13.1f} | {ratios[0]:>18} | {ratios[1]:>16} |')
    if args.profile:
        for name, step in steps.items():
            profile_step(label[name], step)


if __name__ == '__main__':
    main()
