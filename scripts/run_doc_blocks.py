#!/usr/bin/env python3
"""Run the code blocks of the docs in order, as a reader would, and fail on the first error.

    python scripts/run_doc_blocks.py [--full] [--keep] [--list]

Documents (DOCS): README.md's "Train" section, then docs/TUTORIAL.md. Each runs on its own in a fresh
temporary folder that links to the repository's top-level entries (yamls/, scripts/, ...), so a block sees a
fresh clone and everything it writes stays out of the checkout. The blocks of one document run in one bash
session (variables and the current folder carry over, as in one terminal), with this interpreter's
environment activated (`python` and `llmfoundry` come from it, as after `. .venv/bin/activate`).

- ```bash / ```sh blocks run as they are; ```python blocks run with `python`; other blocks (diagrams,
  YAML) are not code to run.
- A block preceded by `<!-- docs-test: skip (reason) -->` is skipped, with the reason printed: GPU-only
  commands, servers, package installation, multi-node launches.
- SUBSTITUTIONS shrink the docs' sizes (training steps, intervals) so that both documents run in a
  minute or two on 2 CPU cores; `--full` runs the blocks exactly as written. Every substitution must match
  its document, so a docs edit that drops a matched text fails here instead of running at full size.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS: list[tuple[str, str | None]] = [('README.md', 'Train'), ('docs/TUTORIAL.md', None)]  # (file, section)
SKIP = re.compile(r'<!--\s*docs-test:\s*skip\b\s*(.*?)\s*-->')
FENCE = re.compile(r'^```(\w*)\s*$')
RUNNABLE = {'bash': 'bash', 'sh': 'bash', 'python': 'python'}
NOT_LINKED = {'.git', '.venv', 'tutorial-out', 'quickstart-out', 'runs'}  # never shared with the temporary folder

# (document, text as written, text run instead): tiny training runs; the data steps are already quick.
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    ('README.md', 'max_duration=200ba', 'max_duration=4ba eval_interval=2ba'),
    ('docs/TUTORIAL.md', 'max_duration=500ba eval_interval=100ba', 'max_duration=4ba eval_interval=2ba'),
    ('docs/TUTORIAL.md', 'save_interval=250ba', 'save_interval=2ba'),
]


@dataclass
class Block:
    doc: str
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip_reason: str | None


def section_lines(text: str, section: str | None) -> tuple[list[str], int]:
    """The lines of `## section` (up to the next heading of level 2 or higher) and the number of the first."""
    lines = text.splitlines()
    if section is None:
        return lines, 1
    start = next((i for i, line in enumerate(lines) if line.strip() == f'## {section}'), None)
    if start is None:
        raise SystemExit(f'run_doc_blocks: no "## {section}" heading')
    end, in_code = len(lines), False
    for i in range(start + 1, len(lines)):
        in_code ^= lines[i].startswith('```')
        if not in_code and re.match(r'#{1,2} ', lines[i]):  # a '# comment' inside a block is no heading
            end = i
            break
    return lines[start:end], start + 1


def extract_blocks(doc: str, section: str | None) -> list[Block]:
    lines, first = section_lines((REPO / doc).read_text(encoding='utf-8'), section)
    blocks, i, pending_skip = [], 0, None
    while i < len(lines):
        marker = SKIP.search(lines[i])
        opening = FENCE.match(lines[i])
        if marker:
            pending_skip = marker.group(1).strip('() ') or 'marked skip'
        elif opening:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith('```'))
            language = opening.group(1)
            if language in RUNNABLE:
                blocks.append(Block(doc, first + i, language, '\n'.join(lines[i + 1:end]) + '\n', pending_skip))
            elif pending_skip:
                raise SystemExit(f'run_doc_blocks: {doc}:{first + i}: skip marker before a block that never runs')
            pending_skip, i = None, end
        elif lines[i].strip():
            pending_skip = None  # a marker applies only to the block right after it
        i += 1
    return blocks


def shrink(doc: str, blocks: list[Block]) -> None:
    """Apply the SUBSTITUTIONS of `doc` to its blocks; each one must match."""
    for _, written, instead in [entry for entry in SUBSTITUTIONS if entry[0] == doc]:
        hits = [b for b in blocks if b.skip_reason is None and written in b.code]
        if not hits:
            raise SystemExit(f'run_doc_blocks: substitution {written!r} matches no block of {doc}; '
                             'update SUBSTITUTIONS in scripts/run_doc_blocks.py')
        for block in hits:
            block.code = block.code.replace(written, instead)


def shell_script(blocks: list[Block]) -> str:
    """One bash session for a document: a banner before each block, python blocks fed to `python`."""
    parts = ['set -euo pipefail']
    for index, block in enumerate(blocks):
        where = f'{block.doc}:{block.line}'
        if block.skip_reason is not None:
            parts.append(f"echo '=== skipped {where}: {block.skip_reason}'")
            continue
        parts.append(f"echo '=== running {where}'")
        if block.language == 'python':
            parts.append(f"python - <<'DOC_BLOCK_{index}'\n{block.code}DOC_BLOCK_{index}")
        else:
            parts.append(block.code)
    parts.append("echo '=== every block ran'")
    return '\n'.join(parts) + '\n'


def workdir(parent: Path) -> Path:
    """A folder that looks like a fresh clone: links to the repository's entries, no outputs."""
    folder = Path(tempfile.mkdtemp(prefix='docs-', dir=parent))
    for entry in REPO.iterdir():
        if entry.name not in NOT_LINKED:
            (folder / entry.name).symlink_to(entry)
    return folder


def environment() -> dict[str, str]:
    """This interpreter's environment activated, offline, and quiet about tokenizer threads."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, 'PATH': bin_dir + os.pathsep + os.environ.get('PATH', ''), 'PYTHONUNBUFFERED': '1'}
    if sys.prefix != sys.base_prefix:
        env['VIRTUAL_ENV'] = sys.prefix
    for key, value in (('HF_HUB_OFFLINE', '1'), ('TRANSFORMERS_OFFLINE', '1'), ('HF_DATASETS_OFFLINE', '1'),
                       ('WANDB_MODE', 'offline'), ('TOKENIZERS_PARALLELISM', 'false')):
        env.setdefault(key, value)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--full', action='store_true', help='run the blocks exactly as written (no SUBSTITUTIONS)')
    parser.add_argument('--keep', action='store_true', help='keep the temporary folders (their paths are printed)')
    parser.add_argument('--list', action='store_true', help='print the script of each document and exit')
    args = parser.parse_args(argv)

    parent = Path(tempfile.mkdtemp(prefix='llmfoundry-doc-blocks-'))
    try:
        for doc, section in DOCS:
            blocks = extract_blocks(doc, section)
            if not args.full:
                shrink(doc, blocks)
            script = shell_script(blocks)
            if args.list:
                print(f'##### {doc}\n{script}')
                continue
            folder = workdir(parent)
            print(f'##### {doc}' + (f' (section {section})' if section else '') + f' in {folder}', flush=True)
            result = subprocess.run(['bash', '-c', script], cwd=folder, env=environment())
            if result.returncode != 0:
                print(f'run_doc_blocks: {doc}: the block after the last "=== running" line failed '
                      f'(exit status {result.returncode})', file=sys.stderr)
                return 1
    finally:
        if args.keep:
            print(f'kept {parent}')
        else:
            shutil.rmtree(parent, ignore_errors=True)  # removes the links, never what they point to
    return 0


if __name__ == '__main__':
    sys.exit(main())
