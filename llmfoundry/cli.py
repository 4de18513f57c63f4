"""The `llmfoundry` command: one entry point whose subcommands live in their own modules.

Each subcommand module exposes `main(argv: list[str]) -> int`; it is imported only when used, so
`llmfoundry --help` stays fast and a subcommand's heavy imports never slow another one down.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    'train': ('llmfoundry.train.cli', 'train from an llm-foundry style YAML (--nproc N launches N ranks)'),
    'eval': ('llmfoundry.eval.cli', 'evaluate ICL tasks and the eval gauntlet from an llm-foundry eval YAML'),
    'lm-eval': ('llmfoundry.eval.lm_eval_cli', "lm-evaluation-harness's CLI with our models (--model llmfoundry)"),
    'convert': ('llmfoundry.export.cli', 'convert models between llmfoundry and Hugging Face formats'),
    'tokenizer': ('llmfoundry.data.tokenizer_cli', 'train a byte-level BPE tokenizer on local files'),
    'data-prep': ('llmfoundry.data.prep.cli', 'convert datasets into MDS shards; inspect finetuning masks'),
    'generate': ('llmfoundry.inference.generate_cli', 'complete prompts with a checkpoint or Hugging Face folder'),
    'chat': ('llmfoundry.inference.chat_cli', 'multi-turn chat (stdin) with the chat template and a system prompt'),
}


def _usage() -> str:
    lines = ['usage: llmfoundry <command> [args...]', '', 'commands:']
    lines += [f'  {name:<12} {help_text}' for name, (_, help_text) in SUBCOMMANDS.items()]
    lines += ['', "Run 'llmfoundry <command> --help' for a command's options."]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help', 'help'):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"llmfoundry: unknown command '{name}'.\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == '__main__':
    sys.exit(main())
