"""`llmfoundry train YAML --dry-run` on an llm-foundry pretraining YAML: numbers, layout, shapes, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmfoundry.train.cli import main as llmfoundry_train
from llmfoundry.train.entry import main as train

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / 'tests' / 'fixtures' / 'llmfoundry-yamls' / 'mpt-125m.yaml'  # vocab 50368, biases, learned positions
# The released MPT-125M: vocabulary padded to 50432, no biases, ALiBi (no position table), as yamls/pretrain/.
RELEASED_MPT_125M = ['model.vocab_size=50432', 'model.no_bias=true', 'model.attn_config.alibi=true']


def dry_run(capsys, args: list[str], *, cli: bool = False) -> tuple[int, list[str], str]:
    code = (llmfoundry_train if cli else train)([*args, '--dry-run'])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err


@pytest.fixture
def yaml_args(mds_dir, tokenizer_dir, tmp_path, monkeypatch) -> list[str]:
    """The fixture YAML on the session MDS and tokenizer, run from an empty folder (to see nothing is written)."""
    monkeypatch.chdir(tmp_path)
    return [str(FIXTURE), f'variables.data_local={mds_dir}', f'tokenizer.name={tokenizer_dir}',
            f'save_folder={tmp_path}/run']


def test_dry_run_reports_the_model_the_layout_and_the_first_batch(capsys, yaml_args, tmp_path):
    code, lines, _ = dry_run(capsys, yaml_args)
    assert code == 0, lines
    assert lines[0].startswith('checked: data of train_loader, eval_loader; load_path not set; run folder '
                               f'{tmp_path}/run writable; tokenizer ')
    # 12 blocks x (4 d^2 attention + 2 x 4 d^2 MLP + 6,912 biases + 3,072 norm) + final norm 1,536
    # + token embedding 50,368 x 768 + learned positions 2,048 x 768, with d = 768
    assert lines[1] == 'model: mpt_causal_lm, 125,311,488 parameters (built on the meta device)'
    # 3 x (2 x (12 x 7,077,888 block weights + 768 x 50,368 head) + 4 x 12 layers x 2,048 x 768)
    assert lines[2] == ('FLOPs per token: 968,196,096 (9.682e+08; training, forward + backward, at max_seq_len '
                        '2048)')
    assert lines[3:8] == [
        'world size: 1 (layout for this process; --nproc N or WORLD_SIZE=N shows N ranks)',
        'parallelism: single process, no process group; fsdp_config (FULL_SHARD) shards from 2 ranks on',
        'precision: amp_bf16 (autocast to bfloat16)',
        'batch: global 256 = 1 rank x 256 per device; microbatch 16 -> 16 gradient accumulation steps',
        'first batch (one device): input_ids (256, 2048) int64, attention_mask (256, 2048) int64, '
        'labels (256, 2048) int64',
    ]
    assert lines[-1] == 'dry run OK: nothing was trained or written.'
    assert sorted(os.listdir(tmp_path)) == []  # no run folder, no runs/, no cache


def test_dry_run_shows_the_layout_per_rank_for_world_size(capsys, yaml_args, monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '8')
    code, lines, _ = dry_run(capsys, yaml_args)
    assert code == 0, lines
    assert lines[3:8] == [
        'world size: 8 (layout for each of 8 ranks)',
        'parallelism: FSDP2 FULL_SHARD over 8 ranks (device mesh: shard 8)',
        'precision: amp_bf16 (autocast to bfloat16); FSDP mixed_precision PURE: parameters in bfloat16, gradients '
        'reduced in bfloat16, master weights and optimizer state in float32',
        'batch: global 256 = 8 ranks x 32 per device; microbatch 16 -> 2 gradient accumulation steps',
        'first batch (one device): input_ids (32, 2048) int64, attention_mask (32, 2048) int64, '
        'labels (32, 2048) int64',
    ]
    assert os.environ['WORLD_SIZE'] == '8'  # hidden from the loader during the dry run only


def test_llmfoundry_train_nproc_dry_run_runs_in_this_process(capsys, yaml_args):
    code, lines, _ = dry_run(capsys, [*yaml_args, *RELEASED_MPT_125M, 'fsdp_config=null',
                                      'device_train_microbatch_size=auto', '--nproc', '2'], cli=True)
    assert code == 0, lines
    assert lines[1] == 'model: mpt_causal_lm, 123,685,632 parameters (built on the meta device)'  # MPT-125M
    assert 'parallelism: DDP over 2 ranks (a full copy of the model on each; gradients all-reduced)' in lines
    assert ('batch: global 256 = 2 ranks x 128 per device; microbatch auto (starts at 128; every rank halves it and '
            'retries the batch when any rank runs out of memory)') in lines


def test_dry_run_stops_at_a_wrong_path_before_any_model(capsys, yaml_args, tmp_path):
    code, lines, err = dry_run(capsys, [*yaml_args, f'load_path={tmp_path}/missing-checkpoint'])
    assert code == 2 and lines == []  # no model line: the check came first
    assert f"Config error: load_path='{tmp_path}/missing-checkpoint': {tmp_path}/missing-checkpoint does not " \
           'exist.' in err.splitlines()
    code, lines, err = dry_run(capsys, [*yaml_args, 'global_train_batch_size=250', '--nproc', '8'], cli=True)
    assert code == 2 and not any(line.startswith('model:') for line in lines)
    assert 'Config error: global_train_batch_size=250 is not divisible by the 8 ranks; choose a multiple of 8.' in err


@pytest.mark.slow
def test_train_script_dry_run(mds_dir, tokenizer_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / 'scripts' / 'train' / 'train.py'), str(FIXTURE), f'variables.data_local={mds_dir}',
         f'tokenizer.name={tokenizer_dir}', 'global_train_batch_size=8', 'device_train_microbatch_size=4', '--dry-run'],
        cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'batch: global 8 = 1 rank x 8 per device; microbatch 4 -> 2 gradient accumulation steps' in result.stdout
    assert result.stdout.strip().endswith('dry run OK: nothing was trained or written.')
    assert os.listdir(tmp_path) == []
