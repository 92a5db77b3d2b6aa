"""Shared helpers: app directories on disk and a real gunicorn server on loopback."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_app(root: Path, manifest: str, sources: dict[str, str] | None = None, copy: tuple[str, ...] = ()) -> Path:
    """Create an app directory: a deploy.yaml, inline sources, and test modules from tests/apps."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "deploy.yaml").write_text(textwrap.dedent(manifest))
    for name, text in (sources or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for name in copy:
        (root / "modules").mkdir(exist_ok=True)
        shutil.copy(APPS / name, root / "modules" / name)
    return root


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


class Server:
    """``hotplate serve`` on a loopback port, stopped at the end of the test."""

    def __init__(self, app: Path, state: Path, workers: int = 1, threads: int = 4, extra_env: dict | None = None,
                 state_files: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = state.parent / f"server-{self.port}.log"
        state.mkdir(parents=True, exist_ok=True)
        for name in state_files:
            (state / name).touch()
        cmd = [sys.executable, "-m", "controller.cli", "serve", str(app), "--state", str(state),
               "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers), "--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     env={**env(), **(extra_env or {})}, cwd=ROOT)
        self.wait_ready(workers)

    def wait_ready(self, workers: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()}")
            try:
                requests.get(self.url + "/_hotplate/health", timeout=1)
                if self.log.read_text().count("serves release") + self.log.read_text().count("could not load") >= workers:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log.read_text()}")

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(app: Path, **kw) -> Server:
        server = Server(app, tmp_path / f"state-{len(servers)}", **kw)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
