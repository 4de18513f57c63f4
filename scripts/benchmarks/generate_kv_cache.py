"""Greedy generation with the KV cache: our MPTForCausalLM vs transformers' native MptForCausalLM, same weights.

    python scripts/benchmarks/generate_kv_cache.py [--prompt-lengths 128 512 2048 8192] [--new-tokens 64]
        [--d-model 256] [--n-layers 4] [--n-heads 8] [--vocab 8192] [--threads N]

A random ALiBi MPT (the architecture transformers' native class implements) is exported with
`llmfoundry.export.export_to_hf` and loaded back as MptForCausalLM. Per prompt length (batch 1), after a
warm-up at that length, one generate call is timed token by token: the first token (the prompt's forward), then
decode tokens/s from the median time of the remaining (cached) steps. `same` says whether both models chose
the same greedy tokens.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import tempfile
import time

import torch
from transformers import MptForCausalLM, StoppingCriteria, StoppingCriteriaList

from llmfoundry.export import export_to_hf
from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--prompt-lengths', type=int, nargs='+', default=[128, 512, 2048, 8192])
    parser.add_argument('--new-tokens', type=int, default=64)
    parser.add_argument('--d-model', type=int, default=256)
    parser.add_argument('--n-layers', type=int, default=4)
    parser.add_argument('--n-heads', type=int, default=8)
    parser.add_argument('--vocab', type=int, default=8192)
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default: torch\'s)')
    return parser.parse_args()


class _StepClock(StoppingCriteria):
    """Never stops generation; notes the time each new token is ready."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def _measure(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float, torch.Tensor]:
    """(seconds to the first token, decode tokens/s after it, the generated tokens) of one greedy generate."""
    def run(tokens: int, clock: _StepClock) -> torch.Tensor:
        # min_new_tokens: a random model may emit EOS; every run must decode the same number of steps.
        return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=tokens,
                              min_new_tokens=tokens, do_sample=False, use_cache=True, pad_token_id=0,
                              stopping_criteria=StoppingCriteriaList([clock]))[:, prompt.shape[1]:]

    run(2, _StepClock())  # warm-up at this length: the first large allocations are not part of the timing
    clock = _StepClock()
    start = time.perf_counter()
    tokens = run(new_tokens, clock)
    assert tokens.shape[1] == new_tokens == len(clock.times)
    # The median step, not the mean: on a shared machine a few steps slowed by other work would dominate.
    steps = [later - earlier for earlier, later in itertools.pairwise(clock.times)]
    return clock.times[0] - start, 1 / statistics.median(steps), tokens


def main() -> None:
    args = _args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = MPTConfig(d_model=args.d_model, n_heads=args.n_heads, n_layers=args.n_layers, vocab_size=args.vocab,
                       max_seq_len=max(args.prompt_lengths) + args.new_tokens, no_bias=True,
                       attn_config={'alibi': True, 'attn_impl': 'torch'})
    ours = MPTForCausalLM(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        export_to_hf(ours, folder)
        theirs = MptForCausalLM.from_pretrained(folder).eval()
    params = sum(p.numel() for p in ours.parameters()) / 1e6
    print(f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch '
          f'{torch.__version__}; MPT d_model={args.d_model} n_layers={args.n_layers} n_heads={args.n_heads} '
          f'vocab={args.vocab} ({params:.1f}M params), fp32, batch 1, {args.new_tokens} new tokens')
    header = ('prompt', 'first token s: ours', 'native', 'decode tokens/s: ours', 'native', 'ours/native', 'same')
    print(' | '.join(header))
    for length in args.prompt_lengths:
        prompt = torch.randint(0, args.vocab, (1, length), generator=torch.Generator().manual_seed(length))
        our_first, our_rate, our_tokens = _measure(ours, prompt, args.new_tokens)
        their_first, their_rate, their_tokens = _measure(theirs, prompt, args.new_tokens)
        row = (length, f'{our_first:.3f}', f'{their_first:.3f}', f'{our_rate:.1f}', f'{their_rate:.1f}',
               f'{our_rate / their_rate:.2f}', 'yes' if torch.equal(our_tokens, their_tokens) else 'no')
        print(' | '.join(str(cell).rjust(len(name)) for cell, name in zip(row, header, strict=True)), flush=True)


if __name__ == '__main__':
    main()
