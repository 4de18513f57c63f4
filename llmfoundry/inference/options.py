"""The command-line options `llmfoundry generate` and `llmfoundry chat` share, with llm-foundry's flag names.

Only argparse here: `--help` must answer before torch or transformers are imported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PROMPT_FILE_PREFIX = 'file::'
DTYPES = ('fp32', 'bf16', 'fp16')


def str2bool(value: str | bool) -> bool:
    """llm-foundry's boolean flags take a value (`--do_sample false`); a bare flag means true."""
    if isinstance(value, bool):
        return value
    lowered = value.lower()
    if lowered in ('true', 't', 'yes', 'y', '1'):
        return True
    if lowered in ('false', 'f', 'no', 'n', '0'):
        return False
    raise argparse.ArgumentTypeError(f'expected a boolean (true/false), got {value!r}')


def _flag(parser: argparse.ArgumentParser, name: str, default: bool, help_text: str) -> None:
    parser.add_argument(name, type=str2bool, nargs='?', const=True, default=default,
                        help=f'{help_text} (true/false; default: {str(default).lower()})')


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--name_or_path', required=True,
                        help='a Hugging Face folder (or hub id), a training run folder (its latest checkpoint) or '
                        'one of our checkpoint folders')
    parser.add_argument('--tokenizer', default=None,
                        help="tokenizer folder or hub id (default: the folder's own, or a checkpoint's "
                        'training config tokenizer)')
    parser.add_argument('--config', default=None,
                        help="training YAML that rebuilds a checkpoint's model (needed for Composer checkpoints)")
    parser.add_argument('--model_dtype', choices=DTYPES, default=None,
                        help='weights dtype (default: as stored; fp32 for checkpoints)')
    parser.add_argument('--device', default=None, help='torch device (default: cuda when available, else cpu)')
    _flag(parser, '--trust_remote_code', True, "run a folder's own modeling code for model types we do not load")


def add_generation_options(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    parser.add_argument('--max_new_tokens', type=int, default=max_new_tokens)
    parser.add_argument('--temperature', type=float, default=1.0)
    parser.add_argument('--top_p', type=float, default=1.0)
    parser.add_argument('--top_k', type=int, default=50)
    parser.add_argument('--repetition_penalty', type=float, default=1.0)
    _flag(parser, '--do_sample', True, 'sample; false decodes greedily')
    _flag(parser, '--use_cache', True, 'reuse attention keys and values between steps (the KV cache)')
    parser.add_argument('--eos_token_id', type=int, default=None, help="default: the tokenizer's")
    parser.add_argument('--pad_token_id', type=int, default=None, help="default: the tokenizer's pad, else EOS")
    parser.add_argument('--seed', type=int, default=42)


def read_prompts(prompts: list[str]) -> list[str]:
    """Each prompt as given, or the whole text of the file a `file::PATH` prompt names."""
    out = []
    for prompt in prompts:
        if prompt.startswith(PROMPT_FILE_PREFIX):
            path = Path(prompt.removeprefix(PROMPT_FILE_PREFIX)).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f'prompt file {path} does not exist')
            prompt = path.read_text(encoding='utf-8')
        out.append(prompt)
    return out


GENERATION_FLAGS = ('max_new_tokens', 'temperature', 'top_p', 'top_k', 'repetition_penalty', 'do_sample',
                    'use_cache', 'eos_token_id', 'pad_token_id')


def generation_values(args: argparse.Namespace) -> dict[str, object]:
    """The parsed generation flags, keyed as GenerationSettings' fields."""
    return {name: getattr(args, name) for name in GENERATION_FLAGS}


def load_values(args: argparse.Namespace) -> dict[str, object]:
    """The parsed model flags, keyed as load_for_generation's arguments."""
    return {'tokenizer': args.tokenizer, 'config': args.config, 'dtype': args.model_dtype, 'device': args.device,
            'trust_remote_code': args.trust_remote_code}
