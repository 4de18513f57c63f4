"""`llmfoundry generate`: complete prompts with a checkpoint or a Hugging Face folder; prints tokens/s."""

from __future__ import annotations

import argparse
import sys

from llmfoundry.config.cli_args import parse_or_exit_status

from .options import add_generation_options, add_model_options, generation_values, load_values, read_prompts

DEFAULT_PROMPTS = ['My name is', 'This is an explanation of deep learning to a five year old. Deep learning is']


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='llmfoundry generate', description=__doc__)
    add_model_options(parser)
    parser.add_argument('--prompts', nargs='+', default=DEFAULT_PROMPTS,
                        help='prompts to complete; file::PATH reads one prompt from a file')
    parser.add_argument('--max_batch_size', type=int, default=None,
                        help='prompts per generate call (default: all at once, left-padded)')
    add_generation_options(parser, max_new_tokens=100)
    return parser


def main(argv: list[str]) -> int:
    args = parse_or_exit_status(_parser(), argv)
    if isinstance(args, int):  # --help or a usage error
        return args
    # Heavy imports only once the arguments are valid, so --help stays fast.
    import torch

    from llmfoundry.train.checkpoint import CheckpointError

    from .generation import GenerationSettings, generate
    from .loading import describe, load_for_generation

    try:
        prompts = read_prompts(args.prompts)
        model, tokenizer = load_for_generation(args.name_or_path, **load_values(args))
    except (OSError, ValueError, CheckpointError) as exc:  # a missing folder, a bad config, an unreadable file
        print(f'llmfoundry generate: error: {exc}', file=sys.stderr)
        return 1
    print(f'loaded {args.name_or_path} ({describe(model)})')
    settings = GenerationSettings(**generation_values(args))
    torch.manual_seed(args.seed)
    size = args.max_batch_size or len(prompts)
    tokens = seconds = 0.0
    for start in range(0, len(prompts), size):
        result = generate(model, tokenizer, prompts[start:start + size], settings)
        for i, generation in enumerate(result.generations, start=start + 1):
            print(f'#### prompt {i}\n{generation.prompt}\n#### generation {i}\n{generation.text}')
        tokens, seconds = tokens + result.new_tokens, seconds + result.seconds
    print(f'{int(tokens)} new tokens in {seconds:.2f} s: {tokens / max(seconds, 1e-9):.1f} tokens/s')
    return 0
