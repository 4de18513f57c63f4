"""The whole framework in one offline command: data -> tokenizer -> MDS -> pretraining -> export -> generation
-> instruction finetuning.

    python -m llmfoundry.quickstart [--out DIR] [--max-steps N] [--finetune-steps N] [--reduced]

Every step runs one of our own commands (`llmfoundry tokenizer train`, `llmfoundry data-prep`, `llmfoundry
train`) on the Python standard library's sources, which every Python install carries: code with English
docstrings, so no download is needed and the generated text is recognisably Python. The run summary
(summary.json) and the loss curve (loss_curve.png) land in DIR. The pretrained model is then finetuned on the
instructions shipped in yamls/finetune/data/instruct: the masked-loss inspector shows which tokens train, and the
same instruction is answered before and after. `--reduced` is the test suite's mode: a
smaller corpus, model and step count, same steps. At the end it prints commands to try next, each of which
runs as printed from the current folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llmfoundry.data.stdlib_corpus import stdlib_sources

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = REPO / 'yamls' / 'pretrain' / 'mpt-tiny-cpu.yaml'
INSTRUCT_YAML = REPO / 'yamls' / 'finetune' / 'mpt-tiny-instruct-cpu.yaml'
INSTRUCT_DATA = REPO / 'yamls' / 'finetune' / 'data' / 'instruct'
ANSWER_SEQ_LEN = 256  # the instruct twin's max_seq_len: prompt and answer fit
EOS_TEXT = '<|endoftext|>'
VAL_EVERY = 10  # every 10th corpus file goes to the validation split
PROMPT = 'def read_lines(path):\n    """Return the lines of a text file."""\n'
TRAIN_LOSS, EVAL_LOSS = 'loss/train/total', 'metrics/eval/LanguageCrossEntropy'


@dataclass(frozen=True)
class Plan:
    """How big each step is: the full mode takes a few minutes on 2 CPU cores (README), the reduced one a test."""

    corpus_bytes: int
    max_file_bytes: int
    vocab_size: int
    seq_len: int
    max_steps: int
    batch_size: int
    microbatch_size: int
    finetune_steps: int
    model_overrides: tuple[str, ...] = ()


FULL = Plan(corpus_bytes=5_000_000, max_file_bytes=250_000, vocab_size=4096, seq_len=256, max_steps=200,
            batch_size=16, microbatch_size=8, finetune_steps=30)
REDUCED = Plan(corpus_bytes=250_000, max_file_bytes=40_000, vocab_size=1024, seq_len=64, max_steps=16,
               batch_size=8, microbatch_size=4, finetune_steps=3,
               model_overrides=('model.vocab_size=1024', 'model.d_model=64', 'model.n_layers=2'))


@dataclass(frozen=True)
class Layout:
    """Where each step writes inside the output folder."""

    out: Path

    @property
    def corpus(self) -> Path:
        return self.out / 'corpus'

    @property
    def tokenizer(self) -> Path:
        return self.out / 'tokenizer'

    @property
    def mds(self) -> Path:
        return self.out / 'mds'

    @property
    def run(self) -> Path:
        return self.out / 'run'

    @property
    def hf(self) -> Path:
        return self.out / 'hf'

    @property
    def finetune(self) -> Path:
        return self.out / 'finetune'

    @property
    def hf_instruct(self) -> Path:
        return self.out / 'hf-instruct'

    @property
    def summary(self) -> Path:
        return self.out / 'summary.json'

    @property
    def loss_curve(self) -> Path:
        return self.out / 'loss_curve.png'

    def generated(self) -> list[Path]:
        return [self.corpus, self.tokenizer, self.mds, self.run, self.hf, self.finetune, self.hf_instruct,
                self.summary, self.loss_curve]


STEPS = 8
DEFAULT_OUT = Path('quickstart-out')


def headline(number: int, text: str) -> None:
    """A numbered step title, flushed so it appears before the output of the subprocess it announces."""
    print(f'\n[{number}/{STEPS}] {text}', flush=True)


def check(returncode: int, what: str) -> None:
    if returncode != 0:
        raise SystemExit(f'quickstart: {what} failed (exit status {returncode}); see its output above.')


def clear_previous(layout: Layout) -> None:
    """Remove only what an earlier quickstart wrote, so reruns start clean and nothing else in DIR is touched."""
    for path in layout.generated():
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# ----- 1. corpus ---------------------------------------------------------------------------------------------
def build_corpus(plan: Plan, corpus: Path) -> dict[str, int]:
    """One .txt document per module in corpus/train and corpus/val (every VAL_EVERY-th file held out)."""
    counts = {'train': 0, 'val': 0, 'bytes': 0}
    for split in ('train', 'val'):
        (corpus / split).mkdir(parents=True)
    for index, path in enumerate(stdlib_sources(plan.corpus_bytes, plan.max_file_bytes)):
        split = 'val' if index % VAL_EVERY == VAL_EVERY - 1 else 'train'
        text = path.read_text(encoding='utf-8', errors='replace')
        (corpus / split / f'{path.stem}.txt').write_text(text, encoding='utf-8')
        counts[split] += 1
        counts['bytes'] += len(text.encode('utf-8'))
    return counts


# ----- 2-3. tokenizer and MDS --------------------------------------------------------------------------------
def train_tokenizer(plan: Plan, layout: Layout) -> None:
    """The tokenizer sees only the train split, as it would in a real project."""
    from llmfoundry.data.tokenizer_cli import main as tokenizer_cli

    check(tokenizer_cli(['train', '--input', str(layout.corpus / 'train'), '--vocab-size', str(plan.vocab_size),
                         '--out', str(layout.tokenizer), '--model-max-length', str(plan.seq_len)]),
          'llmfoundry tokenizer train')


def convert_to_mds(plan: Plan, layout: Layout) -> None:
    from llmfoundry.data.prep.cli import main as data_prep

    for split in ('train', 'val'):
        check(data_prep(['convert_text_to_mds', '--input_folder', str(layout.corpus / split),
                         '--output_folder', str(layout.mds / split), '--concat_tokens', str(plan.seq_len),
                         '--tokenizer', str(layout.tokenizer), '--eos_text', EOS_TEXT,
                         '--processes', str(min(2, os.cpu_count() or 1))]),
              f'llmfoundry data-prep convert_text_to_mds ({split})')


# ----- 4. pretraining ----------------------------------------------------------------------------------------
def hardware() -> tuple[str, int]:
    """(device, ranks): one GPU when there is one (this model is far too small to gain from more), else
    2 CPU ranks on 2+ cores, because gloo ranks train on the cores in parallel."""
    import torch

    if torch.cuda.is_available():
        return 'cuda', 1
    return 'cpu', 2 if (os.cpu_count() or 1) >= 2 else 1


def train_overrides(plan: Plan, layout: Layout, device: str) -> list[str]:
    """The tiny YAML, pointed at our data and sized by the plan; eval four times, checkpoint twice."""
    steps = plan.max_steps
    eval_every = max(1, steps // 4)
    return [
        f'variables.data_local={layout.mds}', f'variables.tokenizer={layout.tokenizer}',
        f'variables.max_seq_len={plan.seq_len}', 'variables.run_name=quickstart',
        f'max_duration={steps}ba', f'eval_interval={eval_every}ba', 'eval_first=true',
        f'save_folder={layout.run}', f'save_interval={max(1, steps // 2)}ba',
        f'scheduler.t_warmup={max(1, steps // 10)}ba',
        f'global_train_batch_size={plan.batch_size}', f'device_train_microbatch_size={plan.microbatch_size}',
        f'console_log_interval={max(1, steps // 50)}ba', 'progress_bar=true',
        'train_loader.dataset.num_canonical_nodes=1', 'eval_loader.dataset.num_canonical_nodes=1',
        f"precision={'amp_bf16' if device == 'cuda' else 'fp32'}", *plan.model_overrides,
    ]


def pretrain(plan: Plan, layout: Layout, device: str, nproc: int) -> None:
    """`llmfoundry train` in a subprocess: with --nproc it starts and supervises the ranks itself."""
    launch = ['--nproc', str(nproc)] if nproc > 1 else []
    command = [sys.executable, '-m', 'llmfoundry.cli', 'train', str(TINY_YAML), *launch,
               *train_overrides(plan, layout, device)]
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    if device == 'cpu' and nproc > 1:
        env.setdefault('OMP_NUM_THREADS', '1')  # one thread per rank: two ranks on two cores, no oversubscription
    check(subprocess.run(command, env=env).returncode, 'llmfoundry train')


# ----- 5. export ---------------------------------------------------------------------------------------------
def export_final_checkpoint(run: Path, out: Path, tokenizer: Path) -> str:
    """The newest checkpoint of the run -> a Hugging Face folder (what `llmfoundry convert to-hf` does)."""
    from llmfoundry.export import export_to_hf
    from llmfoundry.export.from_checkpoint import model_from_checkpoint
    from llmfoundry.train.checkpoint import find_latest

    checkpoint = find_latest(str(run))
    if checkpoint is None:
        raise SystemExit(f'quickstart: no complete checkpoint in {run}.')
    fmt = export_to_hf(model_from_checkpoint(checkpoint), out, tokenizer=tokenizer)
    print(f'checkpoint {checkpoint} -> {out} (format: {fmt})')
    return checkpoint


# ----- 6. generation -----------------------------------------------------------------------------------------
def generate(layout: Layout, max_new_tokens: int) -> str:
    """Load the export the way any transformers user would and continue a code prompt."""
    import torch
    from transformers import pipeline

    torch.manual_seed(0)
    generator = pipeline('text-generation', model=str(layout.hf), tokenizer=str(layout.hf))
    result = generator(PROMPT, max_new_tokens=max_new_tokens, do_sample=True, temperature=0.7, top_k=40)
    return result[0]['generated_text']


# ----- 7. instruction finetuning ------------------------------------------------------------------------------
def finetune_overrides(plan: Plan, layout: Layout, checkpoint: str) -> list[str]:
    """The instruct twin from the pretrained checkpoint, sized like the pretrained model, one rank, no eval."""
    return [f'variables.tokenizer={layout.tokenizer}', f'variables.data_dir={INSTRUCT_DATA}',
            f'variables.load_path={checkpoint}', f'save_folder={layout.finetune}',
            f'max_duration={plan.finetune_steps}ba', 'eval_loader=null', 'eval_first=false', 'scheduler.t_warmup=1ba',
            *plan.model_overrides]


def instruction() -> str:
    """The first held-out example's prompt: an instruction the finetuning never sees."""
    first = (INSTRUCT_DATA / 'test.jsonl').read_text(encoding='utf-8').splitlines()[0]
    return json.loads(first)['prompt']


def answer(folder: Path, prompt: str) -> str:
    """The greedy continuation of `prompt` by the model in `folder`, up to its first line break. ALiBi has no
    learned positions, so the model reads a prompt longer than it was trained on: its ALiBi is built this long."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    model = AutoModelForCausalLM.from_pretrained(folder, max_seq_len=ANSWER_SEQ_LEN)
    tokenizer = AutoTokenizer.from_pretrained(folder, model_max_length=ANSWER_SEQ_LEN)
    generator = pipeline('text-generation', model=model, tokenizer=tokenizer)
    text = generator(prompt, max_new_tokens=24, do_sample=False, return_full_text=False)[0]['generated_text']
    return text.strip().split('\n')[0]


def finetune(plan: Plan, layout: Layout, checkpoint: str) -> None:
    """Show the masks, answer an instruction, finetune (one rank, in a subprocess as pretraining), answer again."""
    from llmfoundry.data.finetuning.inspect import main as inspect

    overrides = finetune_overrides(plan, layout, checkpoint)
    print(f'llmfoundry data-prep inspect {relative(INSTRUCT_YAML)} --num-examples 1 (loss on [[...]] only):')
    check(inspect([str(INSTRUCT_YAML), *overrides, '--num-examples', '1']), 'llmfoundry data-prep inspect')
    prompt = instruction()
    before = answer(layout.hf, prompt)
    command = [sys.executable, '-m', 'llmfoundry.cli', 'train', str(INSTRUCT_YAML), *overrides]
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    check(subprocess.run(command, env=env).returncode, 'llmfoundry train (finetuning)')
    export_final_checkpoint(layout.finetune, layout.hf_instruct, layout.tokenizer)
    question = prompt.split('### Instruction:\n')[-1].split('\n')[0]
    print(f'instruction: {question}\n  before finetuning: {before!r}\n  after finetuning:  '
          f'{answer(layout.hf_instruct, prompt)!r}')


# ----- 8. summary and loss curve -----------------------------------------------------------------------------
def read_curves(run: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(tokens, train loss) and (tokens, eval loss), the last record per point (a resumed run repeats some)."""
    train: dict[int, float] = {}
    evals: dict[int, float] = {}
    for line in (run / 'metrics.jsonl').read_text(encoding='utf-8').splitlines():
        record = json.loads(line)
        if record.get(TRAIN_LOSS) is not None:
            train[record['tokens']] = record[TRAIN_LOSS]
        if record.get(EVAL_LOSS) is not None:
            evals[record['tokens']] = record[EVAL_LOSS]
    return sorted(train.items()), sorted(evals.items())


def write_summary(layout: Layout, facts: dict[str, Any]) -> dict[str, Any]:
    train, evals = read_curves(layout.run)
    if not train or not evals:
        raise SystemExit(f'quickstart: {layout.run / "metrics.jsonl"} has no train or eval losses.')
    summary = {
        **facts,
        'tokens': train[-1][0],
        'first_train_loss': train[0][1],
        'final_train_loss': train[-1][1],
        'first_eval_loss': evals[0][1],
        'last_eval_loss': evals[-1][1],
        'eval_perplexity': math.exp(evals[-1][1]),
        'paths': {name: str(getattr(layout, name)) for name in ('corpus', 'tokenizer', 'mds', 'run', 'hf',
                                                               'loss_curve')},
    }
    layout.summary.write_text(json.dumps(summary, indent=2) + '\n', encoding='utf-8')
    return summary


def plot_loss_curve(layout: Layout) -> None:
    """Agg renders to a file without a display (servers, containers, CI)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    train, evals = read_curves(layout.run)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(*zip(*train), label='train loss')
    axes.plot(*zip(*evals), marker='o', label='eval loss')
    axes.set_xlabel('tokens')
    axes.set_ylabel('cross-entropy (nats)')
    axes.set_title('quickstart: MPT pretraining on the Python standard library')
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(layout.loss_curve, dpi=100)
    plt.close(figure)


def relative(path: Path) -> str:
    """`path` as the user would type it here: relative when it is under the current folder, else absolute."""
    path, cwd = path.resolve(), Path.cwd().resolve()
    return str(path.relative_to(cwd) if path.is_relative_to(cwd) else path)


def shown(path: Path) -> str:
    return shlex.quote(relative(path))


def shell_commands() -> tuple[list[str], str, str]:
    """(setup lines, python, llmfoundry): how the user's shell reaches the interpreter this quickstart runs in.

    quickstart.sh runs .venv's python without activating .venv, so `python` in the user's shell may be
    another interpreter that lacks our dependencies: then the first line printed activates this one.
    """
    if sys.prefix != sys.base_prefix:  # a virtualenv: activation puts its python and llmfoundry first on PATH
        active = os.environ.get('VIRTUAL_ENV')
        if active and Path(active).resolve() == Path(sys.prefix).resolve():
            return [], 'python', 'llmfoundry'
        return [f'. {shown(Path(sys.prefix) / "bin" / "activate")}'], 'python', 'llmfoundry'
    on_path = shutil.which('python')
    if on_path and Path(on_path).resolve() == Path(sys.executable).resolve():
        return [], 'python', 'llmfoundry' if shutil.which('llmfoundry') else 'python -m llmfoundry.cli'
    python = shlex.quote(sys.executable)
    return [], python, f'{python} -m llmfoundry.cli'


def next_steps(plan: Plan, layout: Layout, nproc: int, default_out: bool) -> list[tuple[str, str]]:
    """(command, what it does) pairs; after the setup line (if any), every command works as printed from here."""
    setup, python, llmfoundry = shell_commands()
    out = '' if default_out else f' --out {shown(layout.out)}'
    launch = f' --nproc {nproc}' if nproc > 1 else ''
    longer = 5 * max(plan.max_steps, FULL.max_steps)
    generate_code = (f'from transformers import pipeline; generate = pipeline("text-generation", '
                     f'model={json.dumps(relative(layout.hf))}); '
                     'print(generate("def main():", max_new_tokens=40)[0]["generated_text"])')
    return [
        *[(line, 'once per shell: python and llmfoundry of the environment the quickstart ran in') for line in setup],
        (f'{python} -c {shlex.quote(generate_code)}', 'generate from the exported folder with transformers'),
        (f'{llmfoundry} convert to-hf {shown(layout.run)} {shown(layout.out / "hf-again")} '
         f'--tokenizer {shown(layout.tokenizer)}', "export the run's latest checkpoint yourself"),
        (f'{llmfoundry} train {shown(TINY_YAML)} variables.data_local={shown(layout.mds)} '
         f'variables.tokenizer={shown(layout.tokenizer)} variables.max_seq_len={plan.seq_len} '
         f'save_folder={shown(layout.out / "run-again")}{launch}', 'train the same model with your own overrides'),
        (f'{python} -m llmfoundry.quickstart --max-steps {longer}{out}',
         f'the whole quickstart again, training longer: {longer} steps'),
    ]


def print_next_steps(plan: Plan, layout: Layout, nproc: int, default_out: bool) -> None:
    print('\nWhat to try next (each command runs as printed, from this folder):')
    for command, what in next_steps(plan, layout, nproc, default_out):
        print(f'  # {what}\n  {command}')
    print('The same steps one by one, bigger models and S3: docs/TUTORIAL.md; more ranks and nodes: '
          'docs/MULTINODE.md;\nevery config key: docs/CONFIG_REFERENCE.md')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m llmfoundry.quickstart', description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, default=DEFAULT_OUT, help='output folder (default: %(default)s)')
    parser.add_argument('--max-steps', type=int, default=None,
                        help=f'training batches (default: {FULL.max_steps}, reduced: {REDUCED.max_steps})')
    parser.add_argument('--finetune-steps', type=int, default=None,
                        help=f'instruction finetuning batches (default: {FULL.finetune_steps}, reduced: '
                             f'{REDUCED.finetune_steps}; 0 skips that step)')
    parser.add_argument('--reduced', action='store_true', help='smaller corpus, model and step count (for tests)')
    return parser.parse_args(argv)


def choose_plan(args: argparse.Namespace) -> Plan:
    plan = REDUCED if args.reduced else FULL
    if args.max_steps is not None:
        if args.max_steps < 2:
            raise SystemExit('quickstart: --max-steps must be at least 2 (a loss curve needs two points).')
        plan = replace(plan, max_steps=args.max_steps)
    if args.finetune_steps is not None:
        if args.finetune_steps < 0:
            raise SystemExit('quickstart: --finetune-steps must be at least 0.')
        plan = replace(plan, finetune_steps=args.finetune_steps)
    return plan


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan, layout = choose_plan(args), Layout(args.out.resolve())
    start = time.monotonic()
    clear_previous(layout)

    headline(1, f'Building a text+code corpus from the Python standard library -> {layout.corpus}')
    counts = build_corpus(plan, layout.corpus)
    print(f"{counts['train']} train and {counts['val']} val documents, {counts['bytes'] / 1e6:.2f} MB")

    headline(2, f'Training a byte-level BPE tokenizer (vocab {plan.vocab_size}) -> {layout.tokenizer}')
    train_tokenizer(plan, layout)

    headline(3, f'Converting to MDS shards ({plan.seq_len} tokens per sample) -> {layout.mds}/{{train,val}}')
    convert_to_mds(plan, layout)

    device, nproc = hardware()
    headline(4, f'Pretraining a small MPT (ALiBi, no biases) for {plan.max_steps} steps on {nproc} {device} '
                f'rank(s) -> {layout.run}')
    train_start = time.monotonic()
    pretrain(plan, layout, device, nproc)
    train_seconds = time.monotonic() - train_start

    headline(5, f'Exporting the final checkpoint to a Hugging Face folder -> {layout.hf}')
    checkpoint = export_final_checkpoint(layout.run, layout.hf, layout.tokenizer)

    headline(6, "Generating with transformers.pipeline('text-generation') from the exported folder")
    print(generate(layout, max_new_tokens=24 if args.reduced else 64))

    if plan.finetune_steps:
        headline(7, f'Finetuning on instructions for {plan.finetune_steps} steps ({relative(INSTRUCT_YAML)}) -> '
                    f'{layout.finetune}')
        finetune(plan, layout, checkpoint)
    else:
        headline(7, 'Finetuning on instructions: skipped (--finetune-steps 0)')

    headline(8, 'Writing the run summary and the loss curve')
    summary = write_summary(layout, {'steps': plan.max_steps, 'device': device, 'nproc': nproc,
                                     'checkpoint': checkpoint, 'train_seconds': round(train_seconds, 1),
                                     'seconds': round(time.monotonic() - start, 1)})
    plot_loss_curve(layout)
    print(f"train loss {summary['first_train_loss']:.3f} -> {summary['final_train_loss']:.3f}, eval loss "
          f"{summary['first_eval_loss']:.3f} -> {summary['last_eval_loss']:.3f} "
          f"(perplexity {summary['eval_perplexity']:.1f}), {summary['tokens']:,} tokens; "
          f"{summary['seconds']:.0f} s in all, of which training {summary['train_seconds']:.0f} s")
    print(f'summary:    {layout.summary}\nloss curve: {layout.loss_curve}')
    print_next_steps(plan, layout, nproc, default_out=args.out == DEFAULT_OUT)
    return 0


if __name__ == '__main__':
    sys.exit(main())
