"""`llmfoundry chat`: a multi-turn conversation with the tokenizer's chat template (ChatML when it has none).

User turns are read from stdin, one a line, until end of input or a line `quit`; so a conversation can be piped.
"""

from __future__ import annotations

import argparse
import sys

from llmfoundry.config.cli_args import parse_or_exit_status

from .options import add_generation_options, add_model_options, generation_values, load_values

QUIT = 'quit'


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='llmfoundry chat', description=__doc__)
    add_model_options(parser)
    parser.add_argument('--system_prompt', default=None, help='a system message that opens the conversation')
    parser.add_argument('--show_prompt', action='store_true',
                        help='print the rendered conversation the model completes before each answer')
    add_generation_options(parser, max_new_tokens=512)
    return parser


def _next_user_line() -> str | None:
    """The next user line, or None at end of input or `quit`; prompts only when a person is typing."""
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print('User: ', end='', flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == QUIT:
            return None
        if line.strip():
            return line.rstrip('\n')


def main(argv: list[str]) -> int:
    args = parse_or_exit_status(_parser(), argv)
    if isinstance(args, int):  # --help or a usage error
        return args
    # Heavy imports only once the arguments are valid, so --help stays fast.
    import torch

    from llmfoundry.train.checkpoint import CheckpointError

    from .chat import ChatSession
    from .generation import GenerationSettings
    from .loading import describe, load_for_generation

    try:
        model, tokenizer = load_for_generation(args.name_or_path, **load_values(args))
    except (OSError, ValueError, CheckpointError) as exc:  # a missing folder, a bad config, an unreadable file
        print(f'llmfoundry chat: error: {exc}', file=sys.stderr)
        return 1
    print(f'loaded {args.name_or_path} ({describe(model)})')
    session = ChatSession(model, tokenizer, GenerationSettings(**generation_values(args)), args.system_prompt)
    torch.manual_seed(args.seed)
    while (line := _next_user_line()) is not None:
        session.add_user(line)
        if args.show_prompt:
            print(f'#### prompt\n{session.prompt()}')
        try:
            result = session.answer()
        except ValueError as exc:  # the chat template rejected the conversation
            print(f'llmfoundry chat: error: {exc}', file=sys.stderr)
            return 1
        print(f'Assistant: {session.messages[-1]["content"]}')
        print(f'({result.new_tokens} tokens, {result.tokens_per_second:.1f} tokens/s)')
    return 0
