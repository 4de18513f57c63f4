"""`llmfoundry lm-eval [lm_eval's arguments]`: lm-evaluation-harness's own CLI with our model registered.

lm_eval 0.4.13 finds models only in its own registry (no entry points), so the plain `lm_eval` command cannot see
ours. This command registers `llmfoundry` (lazily: --help imports no torch), makes it the default `--model`, runs
on CUDA when there is one unless `--device` is given (lm_eval's own default is cuda:0), and hands every other
argument to lm_eval unchanged. Also `python -m llmfoundry.eval.lm_eval_cli ...`.
"""

from __future__ import annotations

import sys

ADAPTER = 'llmfoundry.eval.lm_eval_adapter:LlmFoundryLM'
HELP = ('-h', '--help')


def _given(argv: list[str], *flags: str) -> bool:
    return any(arg == flag or arg.startswith(f'{flag}=') for arg in argv for flag in flags)


def lm_eval_argv(argv: list[str]) -> list[str]:
    """`argv` with our defaults for lm_eval's `run`: --model llmfoundry, --device cuda or cpu."""
    if argv[:1] in (['ls'], ['validate']):
        return argv
    rest = argv[1:] if argv[:1] == ['run'] else argv
    if _given(rest, *HELP):
        return ['run', *rest]
    if not _given(rest, '--model', '-M'):
        rest = ['--model', 'llmfoundry', *rest]
    if not _given(rest, '--device'):
        import torch

        rest = [*rest, '--device', 'cuda' if torch.cuda.is_available() else 'cpu']
    return ['run', *rest]


def main(argv: list[str]) -> int:
    try:
        import lm_eval.models  # noqa: F401  (lm_eval's own models, registered lazily)
        from lm_eval.__main__ import cli_evaluate
        from lm_eval.api.registry import model_registry
    except ImportError as exc:
        print(
            f'llmfoundry lm-eval: error: lm-evaluation-harness is not installed ({exc}); '
            "pip install 'llmfoundry[lm-eval]'.",
            file=sys.stderr,
        )
        return 1
    if 'llmfoundry' not in model_registry:
        model_registry.register('llmfoundry', target=ADAPTER)
    saved = sys.argv
    sys.argv = ['llmfoundry lm-eval', *lm_eval_argv(argv)]  # lm_eval's CLI reads sys.argv itself
    try:
        cli_evaluate()
    except SystemExit as exit:  # argparse's --help and usage errors
        return exit.code if isinstance(exit.code, int) else 1
    finally:
        sys.argv = saved
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
