"""Running model-written Python against a code task's test cases, on this machine, as llm-foundry's local executor
does (`CODE_EVAL_DEVICE=LOCAL`): the code is executed as a module, the entry point is called with each test input
(`fn(*eval(test_input))`) and the result compared with `eval(test_output)` (or with the output string itself when it
is not a Python expression). Each test case runs in its own fresh interpreter (`python -I`: no user site, no
environment variables of Python's, its working directory a new empty folder) that is killed after `timeout`
seconds; a crash, an exception or a timeout fails the case.

This executes untrusted code with the user's permissions: it is refused unless CODE_EVAL_DEVICE=LOCAL says the
user accepts that (llm-foundry's switch; its remote executors, LAMBDA and MOSAICML, are not supported here).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from llmfoundry.config.validation import ConfigError
from llmfoundry.train.distributed import threads_per_rank

DEVICE_ENV = 'CODE_EVAL_DEVICE'
TIMEOUT_S = 5.0  # per test case, as llm-foundry's local executor
PASSED = 'llmfoundry-code-eval: passed'

# Runs in the child: the payload arrives on stdin, so nothing of it is ever pasted into source text.
_HARNESS = f'''
import json, sys, types
payload = json.loads(sys.stdin.read())
module = types.ModuleType('generated')
exec(payload['code'], module.__dict__)
result = module.__dict__[payload['entry_point']](*eval(payload['input']))
try:
    expected = eval(payload['output'])
except Exception:
    expected = payload['output']
if result == expected:
    print({PASSED!r})
'''


def check_local_execution_allowed() -> None:
    """Refuse code evaluation unless the user opted in to running generated code on this machine."""
    device = os.environ.get(DEVICE_ENV, '').upper()
    if device != 'LOCAL':
        got = f' (it is {os.environ[DEVICE_ENV]!r})' if DEVICE_ENV in os.environ else ''
        raise ConfigError(f'code_evaluation runs the code the model writes on this machine, with your permissions; '
                          f'set {DEVICE_ENV}=LOCAL to allow it{got}. Remote executors (LAMBDA, MOSAICML) are not '
                          'supported.')


def passes(code: str, entry_point: str, test_input: str, test_output: str, timeout: float = TIMEOUT_S) -> bool:
    """Whether `code`'s `entry_point` maps `test_input` to `test_output` (see the module doc)."""
    payload = json.dumps({'code': code, 'entry_point': entry_point, 'input': test_input, 'output': test_output})
    with tempfile.TemporaryDirectory(prefix='llmfoundry-code-eval-') as folder:
        # its own process group, so that a timeout also ends any process the code started
        child = subprocess.Popen([sys.executable, '-I', '-c', _HARNESS], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=folder,
                                 start_new_session=True)
        try:
            stdout, _ = child.communicate(payload, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        finally:
            _kill_group(child)
    return child.returncode == 0 and stdout.strip().endswith(PASSED)


def _kill_group(child: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone: nothing the case started lives on
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def count_passing(codes: list[str], entry_point: str, cases: list[tuple[str, str]]) -> int:
    """How many of `codes` pass every (input, output) case. The cases run side by side, one interpreter each, on
    this rank's share of the CPUs (train/distributed.py threads_per_rank)."""
    jobs = [(code, case) for code in codes for case in cases]
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        results = list(pool.map(lambda job: passes(job[0], entry_point, *job[1]), jobs))
    return sum(all(results[index * len(cases):(index + 1) * len(cases)]) for index in range(len(codes)))


def _workers() -> int:
    return threads_per_rank(int(os.environ.get('LOCAL_WORLD_SIZE', '1')))
