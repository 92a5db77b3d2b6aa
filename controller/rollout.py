"""Rollout: run the gunicorn server, roll its workers onto a release, gate it.

The roll is make-before-break, through gunicorn 27's control socket: add N
workers (they load the release ``current`` points to), wait until N fresh
workers report that release, then remove the older ones, which finish their
requests and exit. Unlike a SIGHUP, no moment passes with the old workers
retired and the new ones still booting.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from gunicorn.ctl.client import ControlClient

from server.config import ServerConfig
from server.report import pid_alive, read_reports

from .errors import HotplateError, RetryableError
from .state import State


class RolloutError(HotplateError):
    """The new generation did not come up or failed its health gate."""

    reason = "RolloutFailed"


class ServerProcess:
    """The gunicorn master serving ``state/current``: started here, or adopted
    after a controller restart (the server keeps serving while the controller is down)."""

    def __init__(self, state: State, config: ServerConfig):
        self.state = state
        self.config = config
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        try:
            pid = int(self.state.server_pid.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(self, log: Path, timeout: float = 30) -> None:
        """Start the server unless one is already running for this state directory."""
        if self.pid is not None:
            return
        self.state.server_pid.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "server", "--current", str(self.state.current), "--run-dir", str(self.state.run),
               "--workdir", str(self.state.root), "--bind", self.config.bind,
               "--workers", str(self.config.workers), "--threads", str(self.config.threads)]
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HotplateError(f"the server exited at start (code {self.proc.returncode}); see {log}")
            if self.pid is not None and len(self.workers()) >= self.config.workers:
                return
            time.sleep(0.05)
        raise HotplateError(f"the server did not start within {timeout}s; see {log}")

    def stop(self, timeout: float = 30) -> None:
        pid = self.pid
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            if self.proc is not None:
                self.proc.poll()
            time.sleep(0.05)

    def command(self, text: str, attempts: int = 20) -> dict:
        """Send a control-socket command. gunicorn pauses its control server
        around each fork, so a refused or reset connection is tried again."""
        for attempt in range(attempts):
            try:
                with ControlClient(str(self.state.control_socket), timeout=10) as client:
                    return client.send_command(text)
            except Exception as e:
                error = e
                time.sleep(0.01 * (attempt + 1))
        raise RetryableError(f"gunicorn control socket: {text!r} failed: {error}", "ServerUnreachable")

    def workers(self) -> list[int]:
        """Pids of the workers gunicorn currently counts (oldest first)."""
        try:
            return [w["pid"] for w in self.command("show workers")["workers"]]
        except RetryableError:
            return []


@dataclass
class Generation:
    """The workers a roll brought up, and what they reported."""

    release: str
    pids: list[int]
    seconds: float
    reports: dict[int, dict] = field(default_factory=dict)


def roll(server: ServerProcess, release: str, timeout: float = 30) -> Generation:
    """Bring up a full generation of workers on ``release`` (already ``current``),
    then retire every older worker. Raises RolloutError if they do not come up."""
    start = time.monotonic()
    want = server.config.workers
    before = set(server.workers())
    added = server.command(f"worker add {want}")
    # gunicorn counts workers still draining from an earlier roll until they
    # exit; add room for them too, or it would spawn nothing until they do.
    draining = len(before) - added["previous"]
    if draining > 0:
        added = server.command(f"worker add {draining}")
    deadline = start + timeout
    while True:
        reports = read_reports(server.state.workers)
        fresh = [pid for pid, r in reports.items()
                 if pid not in before and r["release"] == release and pid_alive(pid)]
        if len(fresh) >= want:
            break
        if time.monotonic() > deadline:
            # Leave the worker count alone: the rollback's roll retires every
            # older worker, this failed generation included.
            raise RolloutError(f"only {len(fresh)} of {want} new workers reported release {release} within {timeout:.0f}s")
        time.sleep(0.005)
    server.command(f"worker remove {added['total'] - want}")
    serving, reports = _wait_serving(server, release, want, deadline)
    return Generation(release, serving, time.monotonic() - start, reports)


def _wait_serving(server: ServerProcess, release: str, want: int, deadline: float) -> tuple[list[int], dict]:
    """Wait until exactly one full generation accepts connections and every
    worker that does serves ``release``: the moment the deploy is live and the
    arbiter has settled on the new worker count."""
    while True:
        reports = {pid: r for pid, r in read_reports(server.state.workers).items()
                   if not r.get("retiring") and pid_alive(pid)}
        stale = [pid for pid, r in reports.items() if r["release"] != release]
        if len(reports) == want and not stale:
            return sorted(reports), reports
        if time.monotonic() > deadline:
            raise RolloutError(f"workers {stale} still serve another release after the roll")
        time.sleep(0.005)


@dataclass(frozen=True)
class GateSettings:
    bake_seconds: float = 2.0
    max_5xx_ratio: float = 0.1
    min_5xx: int = 5
    max_restarts: int = 1


def health_gate(server: ServerProcess, gen: Generation, release_info: dict, settings: GateSettings, emit) -> None:
    """Check the new generation: modules loaded, health routes 2xx, and during
    the bake window no crash loop and no jump in 5xx. Raises RolloutError."""
    for pid in gen.pids:
        for mod in gen.reports[pid]["modules"]:
            if not mod["ok"]:
                raise RolloutError(f"module {mod['name']} failed to load in worker {pid}: {mod['error']}")
    base = f"http://{server.config.bind}"
    for mod in release_info["modules"]:
        if mod.get("health"):
            status = _get_status(base + mod["health"])
            if not 200 <= status < 300:
                raise RolloutError(f"health route {mod['health']} of module {mod['name']} answered {status}")
            emit(f"health {mod['health']}: {status}")
    if settings.bake_seconds <= 0:
        return
    emit(f"baking for {settings.bake_seconds:g}s: watching for crash loops and 5xx")
    seen: set[int] = set(gen.pids)
    end = time.monotonic() + settings.bake_seconds
    while time.monotonic() < end:
        time.sleep(0.1)
        reports = {pid: r for pid, r in read_reports(server.state.workers).items()
                   if r["release"] == gen.release and not r.get("retiring")}
        seen |= set(reports)
        requests = sum(r["counters"]["requests"] for r in reports.values())
        errors = sum(r["counters"]["errors_5xx"] for r in reports.values())
        if len(seen) - len(gen.pids) > settings.max_restarts:
            raise RolloutError(f"crash loop: {len(seen) - len(gen.pids)} workers replaced during the bake window")
        if errors >= settings.min_5xx and errors > settings.max_5xx_ratio * requests:
            raise RolloutError(f"5xx jump: {errors} of {requests} requests failed during the bake window")


def _get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0
