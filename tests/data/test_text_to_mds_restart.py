"""convert_text_to_mds killed midway, then rerun: the output equals a clean run's, byte for byte."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llmfoundry.data.prep.cli import main as prep_main
from llmfoundry.data.prep.groups import CRASH_ENV, DONE_MARKER


def _files(root: Path) -> dict[str, bytes]:
    """Every file of a finished conversion (the done marker holds timings, so only its presence)."""
    return {str(p.relative_to(root)): (b'' if p.name == DONE_MARKER else p.read_bytes())
            for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.mark.slow
def test_killed_conversion_resumes_to_the_clean_output(tmp_path, capsys, corpus_dir, tokenizer_dir, subprocess_env):
    flags = ['--input_folder', str(corpus_dir), '--concat_tokens', '64', '--tokenizer', tokenizer_dir,
             '--eos_text', '<|endoftext|>', '--processes', '3']
    clean, resumed = tmp_path / 'clean', tmp_path / 'resumed'
    assert prep_main(['convert_text_to_mds', '--output_folder', str(clean), *flags]) == 0

    # SIGKILL of the whole job (converter + workers) as soon as the first group is complete.
    crash = subprocess.run(
        [sys.executable, '-m', 'llmfoundry.cli', 'data-prep', 'convert_text_to_mds', '--output_folder',
         str(resumed), *flags],
        env={**subprocess_env, CRASH_ENV: '1'}, start_new_session=True, capture_output=True, timeout=120,
    )
    assert crash.returncode == -signal.SIGKILL, crash.stderr.decode()
    assert not (resumed / DONE_MARKER).exists() and not (resumed / 'index.json').exists()
    complete = sorted(p.parent.name for p in resumed.glob('group_*/index.json'))
    assert complete, 'the crash hook fires only after a group completed'

    capsys.readouterr()
    assert prep_main(['convert_text_to_mds', '--output_folder', str(resumed), *flags]) == 0
    assert f'({len(complete)} groups were already complete)' in capsys.readouterr().out
    assert _files(resumed) == _files(clean)

    # Other settings on the same folder are refused; --reprocess redoes everything, same bytes.
    other = [f if f != '64' else '32' for f in flags]
    assert prep_main(['convert_text_to_mds', '--output_folder', str(resumed), *other]) == 1
    assert 'pass --reprocess' in capsys.readouterr().err
    fewer = [f if f != '3' else '2' for f in flags]  # --processes 2: two groups, the third one goes
    assert prep_main(['convert_text_to_mds', '--output_folder', str(resumed), '--reprocess', *fewer]) == 0
    assert sorted(p.name for p in resumed.glob('group_*')) == ['group_00000', 'group_00001']
    assert prep_main(['convert_text_to_mds', '--output_folder', str(resumed), '--reprocess', *flags]) == 0
    assert 'groups were already complete' not in capsys.readouterr().out
    assert _files(resumed) == _files(clean)
