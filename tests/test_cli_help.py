"""`--help` of every `llmfoundry` command parses arguments before any heavy import, so it answers at once;
and the help of `convert_text_to_mds` says what the command requires."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ('torch', 'transformers', 'tokenizers', 'streaming', 'omegaconf', 'numpy')
HELP_COMMANDS = [
    [], ['convert'], ['convert', 'to-hf'], ['convert', 'from-hf'], ['tokenizer'], ['tokenizer', 'train'],
    ['data-prep'], ['data-prep', 'convert_text_to_mds'], ['data-prep', 'convert_dataset_json'],
    ['data-prep', 'convert_dataset_hf'], ['data-prep', 'convert_finetuning_dataset'], ['data-prep', 'inspect'],
    ['train'], ['generate'], ['chat'],
]
# Runs the dispatcher as the `llmfoundry` script does, then reports its exit status and the imported modules.
PROBE = """
import json, sys
from llmfoundry.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({'code': code or 0, 'modules': sorted(sys.modules)}), file=sys.stderr)
"""


def run_help(argv: list[str]) -> tuple[dict, str]:
    """({'code': exit status, 'heavy': heavy modules imported}, stdout) of `llmfoundry ARGV --help`."""
    result = subprocess.run([sys.executable, '-c', PROBE, *argv, '--help'], capture_output=True, text=True,
                            timeout=60)
    outcome = json.loads(result.stderr.strip().splitlines()[-1])
    return {'code': outcome['code'], 'heavy': [m for m in HEAVY if m in outcome['modules']]}, result.stdout


@pytest.mark.parametrize('argv', HELP_COMMANDS, ids=lambda argv: ' '.join(argv) or 'llmfoundry')
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    outcome, stdout = run_help(argv)
    assert outcome == {'code': 0, 'heavy': []}
    assert 'usage:' in stdout


def test_convert_text_to_mds_help_and_behaviour_agree() -> None:
    """llm-foundry's convert_text_to_mds only writes packed token rows: --concat_tokens and --tokenizer are
    required, and the help says so instead of offering a text column."""
    _, stdout = run_help(['data-prep', 'convert_text_to_mds'])
    flat = ' '.join(stdout.split())
    assert '--concat_tokens CONCAT_TOKENS required: pack tokens' in flat
    assert '--tokenizer TOKENIZER required:' in flat
    assert 'text column' not in flat

    result = subprocess.run([sys.executable, '-m', 'llmfoundry.cli', 'data-prep', 'convert_text_to_mds',
                             '--input_folder', 'in', '--output_folder', 'out'], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert 'the following arguments are required: --concat_tokens, --tokenizer' in result.stderr

    _, stdout = run_help(['data-prep', 'convert_dataset_json'])  # the JSON converter does write a text column
    assert 'without it a text column is written' in ' '.join(stdout.split())
