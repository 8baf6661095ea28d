"""A real S3-compatible server for tests: moto in server mode, in a subprocess.

Credentials are the dummy ``testing``/``testing`` pair, always passed explicitly; nothing
here reads AWS settings from the environment.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.server import free_port

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"
# moto with atomic conditional writes, as S3's are (see the module).
MOTO_SERVER = Path(__file__).with_name("moto_atomic_server.py")


@dataclass
class MotoServer:
    endpoint_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    _client: Any = None

    def client(self) -> Any:
        """A plain boto3 client on the server, for arranging state behind a handle's back."""
        if self._client is None:
            import boto3

            self._client = boto3.session.Session(
                aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY, region_name=REGION
            ).client("s3", endpoint_url=self.endpoint_url)
        return self._client

    def create_bucket(self) -> str:
        name = f"tenantry-test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Empty and remove a test's bucket: moto slows down as buckets pile up."""
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=obj["Key"])  # one by one: keys may not fit in XML
        client.delete_bucket(Bucket=name)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_moto_server(*, timeout: float = 20.0) -> MotoServer:
    """Start moto's S3 server on a free local port and wait until it answers.

    :raises RuntimeError: when it exits or does not answer within ``timeout`` seconds.
    """
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="tenantry-moto-")) / "moto.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = MotoServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited ({process.returncode}): {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(server.endpoint_url + "/moto-api/", timeout=1):
                return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"moto server did not answer within {timeout}s: {log_path.read_text()[-2000:]}")
        time.sleep(0.1)
