"""The CPU twins of the finetuning recipes (yamls/finetune/mpt-tiny-*-cpu.yaml) train end to end on the data shipped
in yamls/finetune/data: instruct and chat losses fall; the long-context twin trains at 512 tokens, then its loss
at 4,096 tokens (ALiBi extrapolation) is finite and close to the training loss, and it generates from a prompt of
about 4,000 tokens."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llmfoundry.data.prep.cli import main as data_prep
from llmfoundry.train.entry import main as train

REPO = Path(__file__).resolve().parents[2]
FINETUNE = REPO / 'yamls' / 'finetune'
EVAL_LOSS, TRAIN_LOSS = 'metrics/eval/LanguageCrossEntropy', 'loss/train/total'


def losses(run: Path, key: str) -> list[float]:
    records = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    return [record[key] for record in records if key in record]


@pytest.mark.slow
@pytest.mark.parametrize('twin', ['instruct', 'chat'])
def test_instruct_and_chat_twins_learn_their_shipped_data(twin, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / 'run'
    assert train([str(FINETUNE / f'mpt-tiny-{twin}-cpu.yaml'), f'variables.tokenizer={tokenizer_dir}',
                  f'variables.data_dir={FINETUNE / "data" / twin}', f'save_folder={run}', 'max_duration=12ba',
                  'eval_interval=12ba']) == 0
    train_losses, eval_losses = losses(run, TRAIN_LOSS), losses(run, EVAL_LOSS)
    assert len(train_losses) == 12 and all(math.isfinite(loss) for loss in train_losses)
    assert sum(train_losses[-3:]) / 3 < sum(train_losses[:3]) / 3 - 2.0
    assert len(eval_losses) == 2 and eval_losses[1] < eval_losses[0] - 2.0  # eval_first, then at the end


@pytest.fixture
def stories(tokenizer_dir: str, tmp_path: Path) -> Path:
    """The shipped stories as MDS: train rows of 512 tokens, val rows of 4,096."""
    out = tmp_path / 'stories'
    for split, tokens in (('train', 512), ('val', 4096)):
        assert data_prep(['convert_text_to_mds', '--input_folder', str(FINETUNE / 'data' / 'stories' / split),
                          '--output_folder', str(out / split), '--concat_tokens', str(tokens), '--tokenizer',
                          tokenizer_dir, '--eos_text', '<|endoftext|>', '--processes', '1']) == 0
    return out


@pytest.mark.slow
def test_storywriter_twin_trains_at_512_and_evaluates_and_generates_at_4096(stories, tokenizer_dir, tmp_path,
                                                                             monkeypatch):
    from llmfoundry.export.from_checkpoint import model_from_checkpoint
    from llmfoundry.train.checkpoint import find_latest

    monkeypatch.chdir(tmp_path)
    run = tmp_path / 'run'
    assert train([str(FINETUNE / 'mpt-tiny-storywriter-cpu.yaml'), f'variables.tokenizer={tokenizer_dir}',
                  f'variables.data_local={stories}', f'save_folder={run}']) == 0
    train_losses, [eval_loss] = losses(run, TRAIN_LOSS), losses(run, EVAL_LOSS)
    assert len(train_losses) == 10 and train_losses[-1] < train_losses[0] - 2.0
    # 8x longer than any training row, yet about as good as the last training batches
    assert math.isfinite(eval_loss) and eval_loss < train_losses[-1] + 0.5

    model = model_from_checkpoint(find_latest(str(run))).eval()
    assert model.config.max_seq_len == 4096
    prompt = torch.randint(0, 500, (1, 4000), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True)
    assert out.shape == (1, 4008) and torch.equal(out[:, :4000], prompt)


def test_bad_finetuning_data_is_one_line_naming_the_example_before_training(tokenizer_dir, tmp_path, monkeypatch,
                                                                           capsys):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / 'data'
    data.mkdir()
    rows = [{'prompt': 'Name a colour.', 'response': 'Blue.'}, {'prompt': 'Name a fruit.', 'answer': 'A pear.'}]
    for split in ('train', 'test'):
        (data / f'{split}.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
    code = train([str(FINETUNE / 'mpt-tiny-instruct-cpu.yaml'), f'variables.tokenizer={tokenizer_dir}',
                  f'variables.data_dir={data}', f'save_folder={tmp_path / "run"}'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith('Config error: train_loader: ')
    assert f"'json' split 'train' (files: {data}) example 1: unknown example format with keys ['answer', 'prompt']" \
        in err[-1], err[-1]
    assert not (tmp_path / 'run' / 'metrics.jsonl').exists()  # nothing trained
