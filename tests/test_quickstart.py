"""The quickstart (reduced mode) runs end to end, leaves every artifact a newcomer is told about, and the
commands it prints to try next work as printed in a shell where no virtualenv is active."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# What the test appends to a printed command so that it finishes in seconds (later flags/overrides win).
SHRINK = {'llmfoundry.quickstart': ' --reduced --max-steps 2 --finetune-steps 0 --out again',
          ' train ': ' max_duration=2ba'}


def shell_env() -> dict[str, str]:
    """The environment of a new terminal: no virtualenv active, so `python` is whatever PATH finds first."""
    env = {k: v for k, v in os.environ.items() if k not in ('VIRTUAL_ENV', 'PYTHONPATH', 'PYTHONHOME')}
    venv_bin = str(Path(sys.prefix) / 'bin')
    env['PATH'] = os.pathsep.join(p for p in env.get('PATH', '').split(os.pathsep) if p and p != venv_bin)
    return {**env, 'PYTHONUNBUFFERED': '1'}


@pytest.fixture(scope='module')
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(the folder it ran in, its stdout); run from that folder with a relative --out, as a user would."""
    cwd = tmp_path_factory.mktemp('quickstart')
    result = subprocess.run([sys.executable, '-m', 'llmfoundry.quickstart', '--reduced', '--out', 'qs'], cwd=cwd,
                            env=shell_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return cwd, result.stdout


@pytest.mark.slow
def test_reduced_quickstart_leaves_data_checkpoint_hf_folder_plot_and_summary(quickstart: tuple[Path, str]) -> None:
    cwd, stdout = quickstart
    out = cwd / 'qs'
    for number in range(1, 9):
        assert f'[{number}/8]' in stdout
    assert str(out / 'summary.json') in stdout and str(out / 'loss_curve.png') in stdout

    for split in ('train', 'val'):
        assert (out / 'mds' / split / 'index.json').is_file()
    latest = (out / 'run' / 'latest').read_text().strip()
    assert (out / 'run' / latest).is_dir()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / 'hf')
    assert model.config.model_type == 'mpt'
    assert len(AutoTokenizer.from_pretrained(out / 'hf')) == model.config.vocab_size

    assert (out / 'loss_curve.png').read_bytes()[:8] == PNG_MAGIC
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['steps'] == 16 and summary['tokens'] > 0
    assert summary['final_train_loss'] < summary['first_train_loss']
    assert summary['last_eval_loss'] < summary['first_eval_loss']
    assert summary['paths']['hf'] == str(out / 'hf')


@pytest.mark.slow
def test_reduced_quickstart_finetunes_on_instructions_and_shows_masks_and_answers(quickstart) -> None:
    cwd, stdout = quickstart
    step = stdout.split('[7/8]', 1)[1].split('[8/8]', 1)[0]
    # the inspector's first example: the instruction template without loss, the response (and EOS) with it
    example = step.split('--- example 0: ', 1)[1]
    assert ' with loss ---\nBelow is an instruction that describes a task.' in example
    assert '### Response:\n[[Red, green and blue.<|endoftext|>]]' in example
    assert "instruction: What is 6 plus 1?\n  before finetuning: '" in step and "\n  after finetuning:  '" in step
    out = cwd / 'qs'
    records = [json.loads(line) for line in (out / 'finetune' / 'metrics.jsonl').read_text().splitlines()]
    assert [r['batch'] for r in records if 'loss/train/total' in r] == [1, 2, 3]
    assert (out / 'hf-instruct' / 'model.safetensors').is_file()


def printed_commands(stdout: str) -> list[str]:
    """The command lines under 'What to try next' (indented, not the '# ...' explanations)."""
    block = stdout.split('What to try next', 1)[1].splitlines()[1:]
    return [line.strip() for line in block if line.startswith('  ') and not line.strip().startswith('#')]


@pytest.mark.slow
def test_printed_next_steps_run_as_printed_in_a_fresh_shell(quickstart: tuple[Path, str]) -> None:
    cwd, stdout = quickstart
    commands = printed_commands(stdout)
    if sys.prefix != sys.base_prefix:  # run from a venv that the shell has not activated: activate it first
        assert commands[0] == f'. {Path(sys.prefix) / "bin" / "activate"}'
    assert any('llmfoundry.quickstart --max-steps' in c for c in commands)
    assert any(' convert to-hf qs/run ' in c for c in commands)

    script = ['set -euo pipefail']
    for command in commands:
        script.append(command + ''.join(extra for key, extra in SHRINK.items() if key in command))
    result = subprocess.run(['bash', '-c', '\n'.join(script)], cwd=cwd, env=shell_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, '\n'.join(script) + '\n' + result.stdout[-3000:] + result.stderr[-3000:]
    assert (cwd / 'again' / 'summary.json').is_file()
    assert (cwd / 'qs' / 'hf-again' / 'model.safetensors').is_file()
    assert 'def main():' in result.stdout  # the generation hint printed its prompt and continuation
    assert (cwd / 'qs' / 'run-again' / 'metrics.jsonl').is_file()


def test_next_steps_activate_the_quickstarts_venv_only_when_the_shell_has_not(tmp_path: Path, monkeypatch) -> None:
    from llmfoundry import quickstart

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'prefix', str(tmp_path / '.venv'))
    monkeypatch.setattr(sys, 'base_prefix', '/usr')
    layout = quickstart.Layout(tmp_path / 'quickstart-out')
    monkeypatch.delenv('VIRTUAL_ENV', raising=False)
    commands = [command for command, _ in quickstart.next_steps(quickstart.FULL, layout, 2, default_out=True)]
    assert commands[0] == '. .venv/bin/activate'
    assert commands[2] == ('llmfoundry convert to-hf quickstart-out/run quickstart-out/hf-again '
                           '--tokenizer quickstart-out/tokenizer')
    assert commands[3].endswith('save_folder=quickstart-out/run-again --nproc 2')
    assert commands[4] == 'python -m llmfoundry.quickstart --max-steps 1000'

    monkeypatch.setenv('VIRTUAL_ENV', str(tmp_path / '.venv'))
    commands = [command for command, _ in quickstart.next_steps(quickstart.FULL, layout, 1, default_out=False)]
    assert commands[0].startswith('python -c ')
    assert not commands[2].endswith('--nproc 1')
    assert commands[3] == 'python -m llmfoundry.quickstart --max-steps 1000 --out quickstart-out'
