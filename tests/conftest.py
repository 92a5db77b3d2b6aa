"""Shared helpers: app directories on disk and a real gunicorn server on loopback."""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture(autouse=True)
def reachable_tmp(tmp_path):
    """Run as root, hotplate runs module code as its own account, which must
    pass through the directories above a state directory; pytest makes them
    0700. (Only passing through: nothing of them can be listed.)"""
    for path in (tmp_path, *tmp_path.parents):
        if path == Path(tempfile.gettempdir()):
            break
        path.chmod(path.stat().st_mode | 0o111)


@pytest.fixture(scope="session", autouse=True)
def app_accounts(tmp_path_factory):
    """Each state directory gets an account of its own (controller/account.py):
    remove those this session's state directories claimed, and their claims,
    once it ends (another session's, running beside it, are its own)."""
    import pwd
    from hotplate.controller.account import CLAIMS
    base = tmp_path_factory.getbasetemp().resolve()
    before = {p.pw_name for p in pwd.getpwall()}
    yield
    for name in sorted({p.pw_name for p in pwd.getpwall()} - before):
        try:
            claimed = Path((CLAIMS / name).read_text().strip())
        except OSError:
            claimed = None
        if name.startswith("hp-") and (claimed is None or base in claimed.parents):
            subprocess.run(["userdel", name], capture_output=True)
            (CLAIMS / name).unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports that are all free now, below
    the kernel's ephemeral range (32768 up), where no connection's own port
    can land on one meanwhile (``fleet up --base-port``)."""
    for base in random.sample(range(20000, 32768 - count), 200):
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + count):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports between 20000 and 32768")


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


def wait_for(predicate, timeout: float = 30, what: str = "condition", log: str | None = None):
    """Poll ``predicate`` until it returns something true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{log[-4000:]}" if log else ""))


def terminate(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if the process is not gone within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    """``hotplate serve`` on a loopback port, stopped at the end of the test."""

    def __init__(self, app: Path, state: Path, workers: int = 1, threads: int = 4, extra_env: dict | None = None,
                 data_files: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = state
        self.log = state.parent / f"server-{self.port}.log"
        state.mkdir(parents=True, exist_ok=True)
        for name in data_files:  # in the workers' working directory
            (state / "data").mkdir(exist_ok=True)
            (state / "data" / name).touch()
        cmd = [sys.executable, "-m", "hotplate.controller.cli", "serve", str(app), "--state", str(state),
               "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers), "--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **(extra_env or {})}, cwd=ROOT)
        self.wait_ready(workers)

    def wait_ready(self, workers: int, timeout: float = 60) -> None:
        """Wait for every worker to report, however slowly the box boots them;
        stop the server before failing, so no test leaks one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()}")
            try:
                requests.get(self.url + "/_hotplate/health", timeout=5)
                if self.log.read_text().count("serves release") + self.log.read_text().count("could not load") >= workers:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log.read_text()}")

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        terminate(self.proc, 15)


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


class Up:
    """``hotplate up`` (hosted repository) on loopback ports, stopped at the end of the test."""

    def __init__(self, tmp: Path, *extra: str, bake: float = 0.3, workers: int = 2, env: dict | None = None,
                 user: str | None = None, state: Path | None = None, netns: tuple[str, str] | None = None):
        """``netns``: (network namespace, its address) to run in, a host of its own (tests/netlab.py)."""
        self.tmp = tmp
        self.env = {**os.environ, **(env or {})}
        self.runner = ["runuser", "-u", user, "--"] if user else []  # unprivileged: it owns its directory
        if netns:
            self.runner = ["ip", "netns", "exec", netns[0], *self.runner]
        address = netns[1] if netns else "127.0.0.1"
        tmp.mkdir(parents=True, exist_ok=True)
        if user:
            shutil.chown(tmp, user, user)
        self.state = state or tmp / "state"
        self.port, self.api_port = free_port(), free_port()
        self.url = f"http://{address}:{self.port}"
        self.api = f"http://{address}:{self.api_port}"
        self.log = tmp / "up.log"
        self.args = ["up", "--state", str(self.state), "--bind", f"{address}:{self.port}",
                     "--api", f"{address}:{self.api_port}", "--bake", str(bake), "--workers", str(workers),
                     "--threads", "4", *extra]
        self.start()

    def start(self, timeout: float = 60) -> None:
        self.proc = subprocess.Popen([*self.runner, sys.executable, "-m", "hotplate.controller.cli", *self.args],
                                     stdout=self.log.open("a"),
                                     stderr=subprocess.STDOUT, cwd=ROOT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hotplate up exited:\n{self.log.read_text()}")
            try:
                if requests.get(self.api + "/api/status", timeout=5).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"hotplate up not ready:\n{self.log.read_text()}")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hotplate.controller.cli", *args, "--state", str(self.state)],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)

    def status(self) -> dict:
        return requests.get(self.api + "/api/status", headers=self.auth(), timeout=5).json()

    def deploys(self) -> list[dict]:
        return requests.get(self.api + "/api/deploys?limit=100", headers=self.auth(), timeout=5).json()

    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token()}"}

    def token(self) -> str:
        return (self.state / "token").read_text().strip()

    def wait(self, predicate, timeout: float = 30, what: str = "condition"):
        try:
            return wait_for(predicate, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}:\n{self.log.read_text()[-4000:]}") from None

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=5)

    def update_branch(self, work: "Work", sha: str) -> None:
        """Move the hosted branch to ``sha`` without running its hooks (a fetch
        into the bare repository), as an upstream change seen by a webhook would."""
        subprocess.run(["git", "--git-dir", str(self.state / "repo.git"), "fetch", "-q", str(work.path),
                        f"+{sha}:refs/heads/main"], check=True, capture_output=True)

    def sync(self) -> None:
        requests.post(self.api + "/api/sync", headers={"Authorization": f"Bearer {self.token()}"}, timeout=5)

    def kill(self) -> None:
        """SIGKILL the controller, as a crash would (the app server keeps running)."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        terminate(self.proc, 30)
        pid_file = self.state / "run" / "server.pid"
        if pid_file.exists():  # a server left by a killed controller
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


class Work:
    """A developer's clone: edit files, commit, push to the hosted repository."""

    def __init__(self, path: Path, remote: str):
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.email", "dev@example.com")
        self.git("config", "user.name", "Dev")
        self.git("remote", "add", "origin", remote)

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=self.path, capture_output=True, text=True, check=check, timeout=300)

    def write(self, files: dict[str, str]) -> None:
        for name, text in files.items():
            p = self.path / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(text))

    def commit(self, message: str, files: dict[str, str] | None = None) -> str:
        self.write(files or {})
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").stdout.strip()

    def push(self, *extra: str) -> str:
        """Push main; return everything git printed (the remote: lines included)."""
        result = self.git("push", *extra, "origin", "main", check=False)
        return result.stdout + result.stderr


@pytest.fixture
def up(tmp_path):
    made = []

    def start(*extra: str, **kw) -> Up:
        server = Up(tmp_path / f"up{len(made)}", *extra, **kw)
        made.append(server)
        return server

    yield start
    for server in made:
        server.stop()
