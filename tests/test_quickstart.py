"""The quickstart (reduced mode) runs end to end and leaves every artifact a newcomer is told about."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_reduced_quickstart_leaves_data_checkpoint_hf_folder_plot_and_summary(tmp_path: Path) -> None:
    out = tmp_path / 'quickstart'
    result = subprocess.run([sys.executable, '-m', 'llmfoundry.quickstart', '--reduced', '--out', str(out)],
                            env={**os.environ, 'PYTHONUNBUFFERED': '1'}, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for number in range(1, 8):
        assert f'[{number}/7]' in result.stdout
    assert str(out / 'summary.json') in result.stdout and str(out / 'loss_curve.png') in result.stdout

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
