"""The lm-evaluation-harness adapter (`--model llmfoundry`) on a tiny exported MPT with a locally trained BPE:
its log-likelihoods equal our ICL scoring and an unbatched forward pass, its rolling windows and greedy
generations equal independent computations, and lm_eval's own CLI scores a locally defined task with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from eval_helpers import greedy, ids, log_probs, tiny_mpt, write_jsonl
from transformers import AutoTokenizer

from llmfoundry.eval.metrics import InContextLearningLMAccuracy
from llmfoundry.eval.prompts import Request
from llmfoundry.eval.scoring import continuation_logits
from llmfoundry.export import export_to_hf
from llmfoundry.inference.generation import GenerationSettings, generate

lm_eval = pytest.importorskip('lm_eval')
from lm_eval.api.instance import Instance  # noqa: E402

from llmfoundry.eval.lm_eval_adapter import LlmFoundryLM  # noqa: E402

pytestmark = pytest.mark.one_thread
MAX_LENGTH = 32
PAIRS = [
    ('def area(width, height):\n    return', ' width * height'),
    ('import ', 'os.path'),  # the trailing space moves into the continuation
    ('', 'class Point:'),  # empty context: the EOS token is the context
    ('for name in sorted(names):\n' * 4, '    print(name)'),  # longer than MAX_LENGTH: the context is cut
]


@pytest.fixture(scope='module')
def hf_dir(tokenizer_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random MPT exported with the session's BPE; matrices scaled up so that argmaxes are clear."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = tiny_mpt(len(tokenizer), seed=1)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.mul_(20.0)
    out = tmp_path_factory.mktemp('lm_eval') / 'hf'
    export_to_hf(model, out, tokenizer=tokenizer)
    return out


@pytest.fixture(scope='module')
def adapter(hf_dir: Path) -> LlmFoundryLM:
    return LlmFoundryLM(str(hf_dir), device='cpu', batch_size=3, max_length=MAX_LENGTH)


def lm_eval_split(lm: LlmFoundryLM, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm_eval's rule, written out: trailing whitespace joins the continuation, the whole text is encoded once and
    split after the context's tokens; an empty context becomes the EOS token; then the last MAX_LENGTH tokens."""
    if not context:
        ctx, cont = [lm.tokenizer.eos_token_id], ids(lm.tokenizer, continuation)
    else:
        ctx = ids(lm.tokenizer, context.rstrip())
        cont = ids(lm.tokenizer, context + continuation)[len(ctx) :]
    return (ctx + cont)[-MAX_LENGTH:][: -len(cont)], cont


def test_loglikelihood_equals_icl_scoring_and_a_direct_forward(adapter: LlmFoundryLM) -> None:
    model, tokenizer = adapter.model, adapter.tokenizer
    # A continuation the model itself would write: its two greedy tokens after a prompt (that encode back the same).
    pairs = list(PAIRS)
    for prompt in ('def __init__(self', 'return self.', 'while not done'):
        prompt_ids, greedy_ids = ids(tokenizer, prompt), greedy(model, ids(tokenizer, prompt), 2)
        text = tokenizer.decode(greedy_ids)
        if lm_eval_split(adapter, prompt, text) == (prompt_ids, greedy_ids):
            pairs.append((prompt, text))
            break
    assert len(pairs) == len(PAIRS) + 1, 'no prompt whose greedy text encodes back to the same tokens'

    got = adapter.loglikelihood([Instance('loglikelihood', {}, pair, i) for i, pair in enumerate(pairs)])

    requests = [Request(*lm_eval_split(adapter, *pair)) for pair in pairs]
    icl_logits = continuation_logits(model, requests, 2, tokenizer.pad_token_id, torch.device('cpu'), 'fp32')
    for (context, continuation), request, logits, (logprob, is_greedy) in zip(
        pairs, requests, icl_logits, got, strict=True
    ):
        targets = torch.tensor(request.continuation)
        icl = float(logits.log_softmax(-1)[torch.arange(len(targets)), targets].sum())
        direct = float(log_probs(model, request.context, request.continuation).double().sum())
        accuracy = InContextLearningLMAccuracy()
        accuracy.update(logits, targets)
        assert logprob == pytest.approx(icl, rel=1e-5), (context, continuation, logprob, icl)
        assert logprob == pytest.approx(direct, rel=1e-5), (context, continuation, logprob, direct)
        assert is_greedy == (accuracy.compute() == 1.0), (context, continuation)
    assert [is_greedy for _, is_greedy in got] == [False] * len(PAIRS) + [True]
    assert len(requests[3].tokens) == MAX_LENGTH  # the long pair was cut to the window


def test_loglikelihood_rolling_scores_every_token_once_in_windows(adapter: LlmFoundryLM) -> None:
    model, eos = adapter.model, adapter.tokenizer.eos_token_id
    short = 'def f(x):\n    return x + 1\n'
    long = ''.join(f'value_{i} = compute(value_{i - 1}, step={i})\n' for i in range(1, 9))
    got = adapter.loglikelihood_rolling(
        [Instance('loglikelihood_rolling', {}, (text,), i) for i, text in enumerate([short, long])]
    )

    short_ids = ids(adapter.tokenizer, short)
    assert len(short_ids) < MAX_LENGTH
    assert got[0] == pytest.approx(float(log_probs(model, [eos], short_ids).double().sum()), rel=1e-5)

    # Each window reads at most MAX_LENGTH tokens and predicts the next MAX_LENGTH - 1 tokens of the text.
    tokens = [eos] + ids(adapter.tokenizer, long)  # tokens[k] for k >= 1 is predicted once
    assert len(tokens) > 3 * MAX_LENGTH
    total, step = 0.0, MAX_LENGTH - 1
    for first in range(1, len(tokens), step):
        end = min(first + step, len(tokens))
        start = max(0, end - MAX_LENGTH)
        total += float(log_probs(model, tokens[start:first], tokens[first:end]).double().sum())
    assert got[1] == pytest.approx(total, rel=1e-5)


def test_generate_until_is_greedy_and_stops_at_until(adapter: LlmFoundryLM) -> None:
    model, tokenizer = adapter.model, adapter.tokenizer
    prompts = ['def main(argv):\n', 'class Parser(object):', 'import sys\nimport os\n']
    full = [
        tokenizer.decode(greedy(model, ids(tokenizer, p), 12, stop=tokenizer.eos_token_id), skip_special_tokens=True)
        for p in prompts
    ]
    assert min(len(text) for text in full) >= 4, full
    ours = generate(model, tokenizer, prompts, GenerationSettings(max_new_tokens=12, do_sample=False))
    assert [g.text for g in ours.generations] == full  # our batched greedy generation, the same text

    until = full[0][len(full[0]) // 2 :][:2]  # a stop string the first generation reaches halfway
    requests = [
        Instance('generate_until', {}, (p, {'until': [until], 'max_gen_toks': 12}), i) for i, p in enumerate(prompts)
    ]
    got = adapter.generate_until(requests)
    assert got == [text.split(until)[0] for text in full]
    assert len(got[0]) < len(full[0])


def test_equals_lm_evals_own_hf_model_where_nothing_is_cut(adapter: LlmFoundryLM, hf_dir: Path) -> None:
    """lm_eval's `hf` model on the same folder: the same numbers and texts while every sequence fits max_length
    (when cutting, it keeps one more context token and its rolling windows are one token longer)."""
    from lm_eval.models.huggingface import HFLM

    hf = HFLM(pretrained=str(hf_dir), device='cpu', batch_size=3, max_length=MAX_LENGTH, trust_remote_code=True)
    pairs = PAIRS[:3]
    assert all(len(sum(lm_eval_split(adapter, *pair), [])) < MAX_LENGTH for pair in pairs)
    requests = [Instance('loglikelihood', {}, pair, i) for i, pair in enumerate(pairs)]
    for ours, theirs in zip(adapter.loglikelihood(requests), hf.loglikelihood(requests), strict=True):
        assert ours[0] == pytest.approx(theirs[0], rel=1e-5) and ours[1] == theirs[1]
    rolling = [Instance('loglikelihood_rolling', {}, ('def f(x):\n    return x + 1\n',), 0)]
    assert adapter.loglikelihood_rolling(rolling) == pytest.approx(hf.loglikelihood_rolling(rolling), rel=1e-5)
    generate = [
        Instance('generate_until', {}, (p, {'until': ['\n\n'], 'max_gen_toks': 10}), i)
        for i, p in enumerate(['def main(argv):\n', 'import sys\n'])
    ]
    assert adapter.generate_until(generate) == hf.generate_until(generate)


def test_bad_arguments_say_what_to_change(adapter: LlmFoundryLM, hf_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r'batch_size=auto is not supported; give a number \(--batch_size N\)'):
        LlmFoundryLM(str(hf_dir), batch_size='auto')
    with pytest.raises(FileNotFoundError, match='missing does not exist'):
        LlmFoundryLM(str(tmp_path / 'missing'))
    request = Instance('generate_until', {}, ('def f(', {'until': ['\n'], 'max_gen_toks': MAX_LENGTH}), 0)
    with pytest.raises(ValueError, match=f'max_gen_toks={MAX_LENGTH} leaves no room for the prompt in max_length'):
        adapter.generate_until([request])


def test_cli_defaults_to_our_model_and_an_available_device() -> None:
    from llmfoundry.eval.lm_eval_cli import lm_eval_argv

    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    args = ['--model_args', 'path=run', '--tasks', 'piqa']
    assert lm_eval_argv(args) == ['run', '--model', 'llmfoundry', *args, '--device', device]
    given = ['run', '--model=hf', '--device', 'cuda:1', '--tasks', 'piqa']
    assert lm_eval_argv(given) == given
    assert lm_eval_argv(['ls', 'tasks']) == ['ls', 'tasks']
    assert lm_eval_argv(['--help']) == ['run', '--help']  # the help of `run`, where the model flags are


def test_only_the_adapter_imports_lm_eval() -> None:
    """llmfoundry, its command table and `llmfoundry lm-eval`'s module load without lm_eval (an optional extra)."""
    probe = 'import sys, llmfoundry.cli, llmfoundry.eval, llmfoundry.eval.lm_eval_cli; print("lm_eval" in sys.modules)'
    result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == 'False'


@pytest.mark.slow
def test_lm_eval_cli_scores_a_local_task(adapter: LlmFoundryLM, hf_dir: Path, tmp_path: Path) -> None:
    """`llmfoundry lm-eval` (lm_eval's own CLI) on a multiple-choice task from a local JSONL: the accuracy it
    reports equals the one computed here from the log-likelihoods of the choices."""
    from llmfoundry.cli import main

    questions = [
        ('def area(width, height):\n    return', ['width * height', 'None', 'area']),
        ('import', ['os', 'sys', 'json']),
        ('class Point', [':', '(object):']),
        ('for i in', [' range(10):', ' items:', 'x']),
        ('while', [' True:', 'not done:']),
    ]
    records = []
    for i, (context, choices) in enumerate(questions):
        scores = [
            float(log_probs(adapter.model, *lm_eval_split(adapter, context, f' {choice}')).double().sum())
            for choice in choices
        ]
        best = max(range(len(choices)), key=scores.__getitem__)
        gold = best if i % 2 == 0 else (best + 1) % len(choices)  # right on questions 0, 2, 4 only
        records.append({'question': context, 'choices': choices, 'gold': gold})
    data = write_jsonl(tmp_path / 'tiny.jsonl', records)
    (tmp_path / 'tasks').mkdir()
    (tmp_path / 'tasks' / 'tiny_choice.yaml').write_text(
        json.dumps(
            {
                'task': 'tiny_choice',
                'dataset_path': 'json',
                'test_split': 'test',
                'output_type': 'multiple_choice',
                'dataset_kwargs': {'data_files': {'test': data}, 'cache_dir': str(tmp_path / 'datasets_cache')},
                'doc_to_text': '{{question}}',
                'doc_to_choice': '{{choices}}',
                'doc_to_target': 'gold',
                'metric_list': [{'metric': 'acc'}],
            }
        ),
        encoding='utf-8',
    )

    argv = [
        'lm-eval',
        '--model_args',
        f'path={hf_dir}',
        f'max_length={MAX_LENGTH}',
        '--tasks',
        'tiny_choice',
        '--include_path',
        str(tmp_path / 'tasks'),
        '--batch_size',
        '4',
        '--output_path',
        str(tmp_path / 'out'),
    ]
    assert main(argv) == 0
    [results] = (tmp_path / 'out').rglob('results_*.json')
    report = json.loads(results.read_text(encoding='utf-8'))
    assert report['results']['tiny_choice']['acc,none'] == pytest.approx(3 / 5)
    assert report['config']['model'] == 'llmfoundry'
