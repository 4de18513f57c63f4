"""`llmfoundry generate` and `llmfoundry chat` on a training run folder and on Hugging Face folders."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from inference_helpers import greedy_text, save_run, tiny_mpt, word_tokenizer

from llmfoundry.cli import main as cli
from llmfoundry.export import export_to_hf

REPO = Path(__file__).resolve().parents[2]
GREEDY = ['--do_sample', 'false', '--max_new_tokens', '10']


@pytest.fixture
def tokenizer_dir(tmp_path: Path) -> Path:
    word_tokenizer().save_pretrained(tmp_path / 'tok')
    return tmp_path / 'tok'


def test_generate_on_a_run_folder(tmp_path: Path, tokenizer_dir: Path, capsys) -> None:
    model = tiny_mpt(seed=3)
    save_run(model, tmp_path / 'run', tokenizer_dir)
    (tmp_path / 'prompt.txt').write_text('w30 w31 w32', encoding='utf-8')
    prompts = ['w1 w2 w3', 'w7 w8 w9 w10 w11', f'file::{tmp_path / "prompt.txt"}']
    assert cli(['generate', '--name_or_path', str(tmp_path / 'run'), '--prompts', *prompts, *GREEDY]) == 0
    out = capsys.readouterr().out
    tokenizer = word_tokenizer()
    for i, prompt in enumerate(['w1 w2 w3', 'w7 w8 w9 w10 w11', 'w30 w31 w32'], start=1):
        expected = greedy_text(model, tokenizer, prompt, 10)
        assert f'#### prompt {i}\n{prompt}\n#### generation {i}\n{expected}\n' in out
    assert out.splitlines()[-1].endswith('tokens/s') and ' new tokens in ' in out


@pytest.mark.parametrize('dtype', [None, 'bf16'])
def test_generate_on_a_native_mpt_folder(tmp_path: Path, dtype: str | None, capsys) -> None:
    model, tokenizer = tiny_mpt(seed=2), word_tokenizer()
    assert export_to_hf(model, tmp_path / 'hf', tokenizer=tokenizer) == 'mpt'
    dtype_flag = ['--model_dtype', dtype] if dtype else []
    argv = ['generate', '--name_or_path', str(tmp_path / 'hf'), '--prompts', 'w1 w2 w3', '--device', 'cpu']
    assert cli([*argv, *GREEDY, *dtype_flag]) == 0
    out = capsys.readouterr().out
    assert f'(MPTForCausalLM, {"torch.bfloat16" if dtype else "torch.float32"}, cpu)' in out
    generated = out.split('#### generation 1\n')[1].splitlines()[0]
    if dtype is None:  # fp32: the same text as the model that was exported
        assert generated == greedy_text(model, tokenizer, 'w1 w2 w3', 10)
    assert len(generated.split()) >= 5


def test_generate_reports_a_missing_folder(tmp_path: Path, capsys) -> None:
    assert cli(['generate', '--name_or_path', str(tmp_path / 'nope'), '--prompts', 'w1']) == 1
    assert capsys.readouterr().err == f'llmfoundry generate: error: {tmp_path / "nope"} does not exist\n'


def _chatml(messages: list[tuple[str, str]]) -> str:
    """ChatML written out by hand, ending with the assistant's generation prompt."""
    return ''.join(f'<|im_start|>{role}\n{text}<|im_end|>\n' for role, text in messages) + '<|im_start|>assistant\n'


def test_chat_answers_two_turns_with_the_chatml_template(tmp_path: Path, tokenizer_dir: Path, monkeypatch,
                                                         capsys) -> None:
    model = tiny_mpt(seed=3)
    save_run(model, tmp_path / 'run', tokenizer_dir)
    monkeypatch.setattr(sys, 'stdin', io.StringIO('w1 w2\n\nw3 w4 w5\nquit\nw9\n'))
    argv = ['chat', '--name_or_path', str(tmp_path / 'run'), '--system_prompt', 'w50 w51', '--show_prompt', *GREEDY]
    assert cli(argv) == 0
    out = capsys.readouterr().out

    tokenizer = word_tokenizer()
    first = _chatml([('system', 'w50 w51'), ('user', 'w1 w2')])
    answer1 = greedy_text(model, tokenizer, first, 10, special_tokens=False)
    second = _chatml([('system', 'w50 w51'), ('user', 'w1 w2'), ('assistant', answer1), ('user', 'w3 w4 w5')])
    answer2 = greedy_text(model, tokenizer, second, 10, special_tokens=False)
    assert out.count('#### prompt\n') == 2 and out.count('Assistant: ') == 2  # the line after `quit` is never read
    assert f'#### prompt\n{first}\nAssistant: {answer1}\n' in out
    assert f'#### prompt\n{second}\nAssistant: {answer2}\n' in out
    assert answer1 and answer2


def test_hf_chat_script_reads_piped_stdin(tmp_path: Path) -> None:
    model, tokenizer = tiny_mpt(seed=4), word_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}assistant"
    export_to_hf(model, tmp_path / 'hf', tokenizer=tokenizer)
    result = subprocess.run([sys.executable, str(REPO / 'scripts/inference/hf_chat.py'), '--name_or_path',
                             str(tmp_path / 'hf'), '--device', 'cpu', *GREEDY], input='w1 w2\n',
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = greedy_text(model, tokenizer, 'user w1 w2 assistant', 10, special_tokens=False)
    assert f'Assistant: {expected}\n' in result.stdout  # the tokenizer's own template, not ChatML


def test_generate_on_another_transformers_model_uses_its_own_class(tmp_path: Path, capsys) -> None:
    from tiny_hf import TINY_CONFIGS
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(TINY_CONFIGS['gpt2']).eval()
    model.save_pretrained(tmp_path / 'gpt2')
    tokenizer = word_tokenizer()
    tokenizer.save_pretrained(tmp_path / 'gpt2')
    argv = ['generate', '--name_or_path', str(tmp_path / 'gpt2'), '--prompts', 'w1 w2', '--device', 'cpu']
    assert cli([*argv, '--do_sample', 'false', '--max_new_tokens', '5']) == 0
    out = capsys.readouterr().out
    assert '(GPT2LMHeadModel, torch.float32, cpu)' in out
    assert f'#### generation 1\n{greedy_text(model, tokenizer, "w1 w2", 5)}\n' in out
