"""Data prep on a real Ray cluster: a head and one worker node started on this machine (two `ray start`).

One cluster for the whole module (starting it costs seconds on 2 cores). The worker-kill test runs last: it
SIGKILLs the worker node, and the job must still finish with the local converter's exact bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mds_reference import expected_rows, read_rows

from llmfoundry import storage
from llmfoundry.data.prep.cli import main as prep_main
from llmfoundry.data.prep.groups import DONE_MARKER, plan_groups

ray = pytest.importorskip('ray')
from llmfoundry.data.prep.ray_executor import STALL_ENV  # noqa: E402

pytestmark = pytest.mark.slow
EOS = '<|endoftext|>'
RAY = str(Path(sys.executable).with_name('ray'))
STARTUP_TIMEOUT_S = 120


@dataclass
class Cluster:
    address: str
    worker: subprocess.Popen
    stall_file: Path  # the worker node's STALL_ENV file (the kill test arms it by removing the placeholder)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(('127.0.0.1', port)) == 0


def _wait(predicate, what: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f'{what} not ready after {timeout} s')
        time.sleep(0.2)


def _kill_processes_under(temp_dir: str) -> None:
    """SIGKILL every process whose command line names our cluster's own temp dir (raylets, workers, GCS)."""
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            cmdline = Path(f'/proc/{pid}/cmdline').read_bytes()
        except OSError:
            continue
        if temp_dir.encode() in cmdline and int(pid) != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


@pytest.fixture(scope='module')
def cluster(s3_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # Ray's socket paths must stay under 107 characters: a short temp dir, not pytest's tmp path.
    temp_dir = tempfile.mkdtemp(prefix='ray', dir='/tmp')
    logs = tmp_path_factory.mktemp('ray-logs')
    stall_file = logs / 'stall'
    stall_file.write_text('disarmed')  # the hook stalls only once this file is gone
    port = _free_port()
    env = {
        **os.environ, **s3_server.env(), 'PYTHONPATH': str(Path(__file__).resolve().parents[2]),
        'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
        'RAY_USAGE_STATS_ENABLED': '0',
        'RAY_AUTH_MODE': 'disabled',  # loopback only; else a token in ~/.ray (from any earlier local cluster) is used
        # A dead node is noticed in ~2 s instead of ~30 s.
        'RAY_health_check_period_ms': '500', 'RAY_health_check_timeout_ms': '1000',
        'RAY_health_check_failure_threshold': '3',
    }  # fmt: skip
    common = ['--block', '--num-cpus=1', '--object-store-memory=80000000', '--disable-usage-stats']
    procs: list[subprocess.Popen] = []
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv('RAY_AUTH_MODE', 'disabled')  # the driver (this process) too
    try:
        with open(logs / 'head.log', 'wb') as log:
            procs.append(subprocess.Popen(
                [RAY, 'start', '--head', '--node-ip-address=127.0.0.1', f'--port={port}', '--include-dashboard=false',
                 f'--temp-dir={temp_dir}', *common],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ))  # fmt: skip
        _wait(lambda: _listening(port), 'Ray head')
        with open(logs / 'worker.log', 'wb') as log:
            procs.append(subprocess.Popen(
                [RAY, 'start', f'--address=127.0.0.1:{port}', '--node-ip-address=127.0.0.1', *common],
                env={**env, STALL_ENV: str(stall_file)}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            ))  # fmt: skip
        address = f'127.0.0.1:{port}'
        ray.init(address=address, logging_level='WARNING', log_to_driver=False)
        _wait(lambda: sum(n['Alive'] for n in ray.nodes()) == 2, 'Ray worker node')
        yield Cluster(address, procs[1], stall_file)
    finally:
        ray.shutdown()
        monkeypatch.undo()
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        _kill_processes_under(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope='module')
def text_folder(corpus_docs: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred small .txt files: the corpus cut into pieces of ~1 KB."""
    out = tmp_path_factory.mktemp('many-txt')
    pieces = [doc[i : i + 1000] for doc in corpus_docs for i in range(0, len(doc), 1000)][:300]
    for i, piece in enumerate(pieces):
        (out / f'doc_{i:04d}.txt').write_text(piece, encoding='utf-8')
    return out


def _files(root: Path) -> dict[str, bytes]:
    """Every file of a finished local conversion (the done marker holds timings, so only its presence)."""
    return {str(p.relative_to(root)): (b'' if p.name == DONE_MARKER else p.read_bytes())
            for p in sorted(root.rglob('*')) if p.is_file()}  # fmt: skip


def _objects(url: str) -> dict[str, bytes]:
    fs, root = storage.filesystem(url)
    fs.invalidate_cache()
    return {path[len(root) + 1:]: (b'' if path.endswith(DONE_MARKER) else fs.cat_file(path))
            for path in sorted(fs.find(root))}  # fmt: skip


def _group_rows(folder: Path, n_groups: int, tokenizer, n: int) -> list[list[int]]:
    """Independent reference: each group packs its own files' documents; the groups follow in order."""
    files = sorted(folder.glob('*.txt'))
    return [
        row
        for group in plan_groups(files, n_groups)
        for row in expected_rows([p.read_text(encoding='utf-8') for p in group], tokenizer, n, eos_text=EOS)
    ]


def _summary(out: str) -> dict[str, int]:
    line = next(line for line in out.splitlines() if line.startswith('done: '))
    words = line.split()
    return {'documents': int(words[1]), 'tokens': int(words[3]), 'samples': int(words[5]), 'shards': int(words[7])}


def test_text_from_and_to_s3_matches_local(cluster, s3_prefix, text_folder, tmp_path, capsys, tokenizer_dir):
    """Input and output on the real S3 server, groups on both nodes: the local converter's bytes."""
    fs, _ = storage.filesystem(s3_prefix)
    fs.put(str(text_folder), f'{s3_prefix}/in'.removeprefix('s3://'), recursive=True)
    flags = ['--concat_tokens', '64', '--tokenizer', tokenizer_dir, '--eos_text', EOS]
    local = tmp_path / 'local'
    assert (
        prep_main(
            [
                'convert_text_to_mds',
                '--input_folder',
                str(text_folder),
                '--output_folder',
                str(local),
                '--processes',
                '4',
                *flags,
            ]
        )
        == 0
    )
    expected = _summary(capsys.readouterr().out)
    remote = f'{s3_prefix}/out'
    assert (
        prep_main(
            [
                'convert_text_to_mds',
                '--input_folder',
                f'{s3_prefix}/in',
                '--output_folder',
                remote,
                '--executor',
                'ray',
                '--ray-address',
                cluster.address,
                '--num-tasks',
                '4',
                *flags,
            ]
        )
        == 0
    )
    assert _summary(capsys.readouterr().out) == expected
    assert expected['documents'] == 300
    assert _objects(remote) == _files(local)
    assert read_rows(str(tmp_path / 'cache'), remote=remote) == read_rows(str(local))


def test_json_and_hf_groups_match_local(cluster, corpus_docs, tmp_path, capsys, tokenizer, tokenizer_dir):
    inputs = tmp_path / 'jsonl'
    inputs.mkdir()
    chunks = plan_groups(corpus_docs, 6)
    for i, docs in enumerate(chunks):
        (inputs / f'part_{i}.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in docs))
    flags = ['--concat_tokens', '48', '--tokenizer', tokenizer_dir, '--eos_text', EOS]
    ray_flags = ['--executor', 'ray', '--ray-address', cluster.address]
    json_local, json_ray = tmp_path / 'json-local', tmp_path / 'json-ray'
    assert (
        prep_main(
            ['convert_dataset_json', '--path', str(inputs), '--out_root', str(json_local), '--num-tasks', '3', *flags]
        )
        == 0
    )
    assert (
        prep_main(
            [
                'convert_dataset_json',
                '--path',
                str(inputs),
                '--out_root',
                str(json_ray),
                '--num-tasks',
                '3',
                *ray_flags,
                *flags,
            ]
        )
        == 0
    )
    assert _files(json_ray) == _files(json_local)
    groups = [[d for chunk in chunks[g : g + 2] for d in chunk] for g in range(0, 6, 2)]  # 6 files in 3 groups
    expected = [row for docs in groups for row in expected_rows(docs, tokenizer, 48, eos_text=EOS)]
    assert read_rows(str(json_ray)) == expected

    # The hub path on the same files: one streaming shard per file, 3 groups of 2 shards, the same rows.
    data_files = [arg for p in sorted(inputs.glob('*.jsonl')) for arg in ('--data_files', str(p))]
    hf_out = tmp_path / 'hf'
    hf_args = ['convert_dataset_hf', '--dataset', 'json', *data_files, '--out_root', str(hf_out), '--num-tasks', '3',
               *ray_flags, *flags]  # fmt: skip
    capsys.readouterr()
    assert prep_main(hf_args) == 0
    assert read_rows(str(hf_out / 'train')) == expected
    assert sorted(p.name for p in (hf_out / 'train').glob('group_*')) == ['group_00000', 'group_00001', 'group_00002']
    # A rerun finds the job complete and redoes nothing.
    assert prep_main(hf_args) == 0
    assert '(3 groups were already complete)' in capsys.readouterr().out


def test_bad_input_in_a_task_names_the_file(cluster, text_folder, tmp_path, capsys, tokenizer_dir):
    inputs = tmp_path / 'in'
    shutil.copytree(text_folder, inputs)
    bad = inputs / 'doc_0150.txt'
    bad.write_bytes(b'caf\xe9 latin-1\n')
    out = tmp_path / 'out'
    args = [
        'convert_text_to_mds',
        '--input_folder',
        str(inputs),
        '--output_folder',
        str(out),
        '--concat_tokens',
        '64',
        '--tokenizer',
        tokenizer_dir,
        '--executor',
        'ray',
        '--ray-address',
        cluster.address,
        '--num-tasks',
        '3',
    ]
    assert prep_main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('llmfoundry data-prep convert_text_to_mds: error: ') and 'RayTaskError' not in err[-1]
    assert f'{bad}: not UTF-8 text' in err[-1]
    assert not (out / 'index.json').exists() and not (out / DONE_MARKER).exists()
    assert not (out / 'group_00001' / 'index.json').exists() and not list(out.glob('.*.incomplete'))

    # A group whose files hold no document: a JSON Lines file of blank lines, named.
    blank = tmp_path / 'blank'
    blank.mkdir()
    (blank / 'a.jsonl').write_text(json.dumps({'text': 'one document'}) + '\n')
    (blank / 'b.jsonl').write_text('\n\n')
    out = tmp_path / 'blank-out'
    assert (
        prep_main(
            [
                'convert_dataset_json',
                '--path',
                str(blank),
                '--out_root',
                str(out),
                '--executor',
                'ray',
                '--ray-address',
                cluster.address,
                '--num-tasks',
                '2',
            ]
        )
        == 1
    )
    assert f'{blank / "b.jsonl"} holds no documents' in capsys.readouterr().err
    assert not (out / 'index.json').exists() and not (out / DONE_MARKER).exists()


def test_worker_node_killed_mid_job_gives_the_local_output(
    cluster, text_folder, tmp_path, capsys, tokenizer, tokenizer_dir
):
    """A group's task on the worker node stalls until the test SIGKILLs that node; Ray reruns the group on the
    head and the result is byte-for-byte the local converter's with the same grouping."""
    flags = [
        '--input_folder',
        str(text_folder),
        '--concat_tokens',
        '64',
        '--tokenizer',
        tokenizer_dir,
        '--eos_text',
        EOS,
    ]
    local, distributed = tmp_path / 'local', tmp_path / 'ray'
    assert prep_main(['convert_text_to_mds', '--output_folder', str(local), '--processes', '6', *flags]) == 0

    killed: list[int] = []

    def kill_worker_node() -> None:
        _wait(lambda: cluster.stall_file.exists() and cluster.stall_file.read_text().isdigit(), 'stalled task', 120)
        killed.append(int(cluster.stall_file.read_text()))
        os.killpg(cluster.worker.pid, signal.SIGKILL)  # the node: `ray start`, its raylet and log monitor
        os.kill(killed[0], signal.SIGKILL)  # and the stalled task's worker process

    cluster.stall_file.unlink()  # arm the hook
    killer = threading.Thread(target=kill_worker_node, daemon=True)
    killer.start()
    assert (
        prep_main(
            [
                'convert_text_to_mds',
                '--output_folder',
                str(distributed),
                '--executor',
                'ray',
                '--ray-address',
                cluster.address,
                '--num-tasks',
                '6',
                *flags,
            ]
        )
        == 0
    )
    killer.join(timeout=5)
    assert killed, 'the worker node was not killed mid-job'
    assert _files(distributed) == _files(local)
    assert read_rows(str(distributed)) == _group_rows(text_folder, 6, tokenizer, 64)
