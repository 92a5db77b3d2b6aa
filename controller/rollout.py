"""Rollout: run the gunicorn server, roll its workers onto a release, gate it.

The roll is make-before-break, through the master's line
(server/contract/control.py): spawn N workers (they load the release
``current`` points to), wait until N fresh workers report that release,
then retire the older ones, which finish their requests and exit. Unlike a SIGHUP, no moment passes with the old workers
retired and the new ones still booting.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from inotify_simple import INotify, flags

from hotplate.server import cgroups, pidfile, sanitize
from hotplate.server.config import ServerConfig, server_environment
from hotplate.server.contract.control import Master, Unreachable
from hotplate.server.contract.release import ReleaseSpec
from hotplate.server.contract.report import Report, pid_alive, read_reports

from .appconfig import ConfigStore
from .errors import HotplateError, RetryableError, RolloutError
from .state import State

log = logging.getLogger("hotplate.controller")

class ServerProcess:
    """The gunicorn master serving ``state/current``: started here, or adopted
    after a controller restart (the server keeps serving while the controller
    is down), and restarted by :meth:`supervise` whenever it dies.

    The controller binds the app's listening socket itself and hands it to
    each master it starts, so a restarted master takes over
    the same socket: connections that arrive while it boots wait in the
    backlog instead of being refused (``--bind fd://N``).

    :param console: send the server's output to this process's (``hotplate
        dev``: module logs and crashes on the developer's console), not to
        ``run/server.log``.
    :param pass_env: variables of this process's environment the server
        gets besides the kept ones (server/config.py).
    """

    def __init__(self, state: State, config: ServerConfig, console: bool = False, pass_env: tuple[str, ...] = ()):
        self.state = state
        self.pass_env = pass_env
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.listener: socket.socket | None = None
        self.log = state.server_log
        self.console = console
        self.down_reason: str | None = None
        self.restarts = 0
        self.up = threading.Event()
        self.master = Master(state.master_socket)
        self.ahead = Ahead(self)
        self.changes: INotify | None = None

    @property
    def pid(self) -> int | None:
        return pidfile.read(self.state.server_pid)

    def start(self, timeout: float = 30) -> None:
        """Start the server unless one is already running for this state
        directory. One running is adopted: workers it holds for a roll are
        let go, since the controller that asked for them (killed, say) will
        never take them, nor its timer end them (:class:`Ahead`)."""
        if self.pid is not None:
            try:
                self.master.cancel()
            except Unreachable:
                pass  # (a master still starting holds none; one that is gone is restarted by supervise)
            self.up.set()
            return
        pidfile.write(self.state.server_pid, None)
        fds = (self.listener.fileno(),) if self.listener is not None else ()
        cmd = [sys.executable, "-m", "hotplate.server", "--state", str(self.state.root), "--bind", f"fd://{fds[0]}" if fds else self.config.bind,
               "--workers", str(self.config.workers), "--threads", str(self.config.threads),
               "--max-requests", str(self.config.max_requests), "--max-rss", str(self.config.max_rss)]
        if self.config.user:
            cmd += ["--user", self.config.user]
        if self.config.dev_errors:
            cmd += ["--dev-errors", self.config.dev_errors]
        if self.config.store:
            cmd += ["--store", self.config.store]
        cmd += ["--jobs", str(self.config.jobs)]
        if self.config.nats:
            cmd += ["--nats", self.config.nats]
        live = self.state.release(self.state.live_release())
        ConfigStore(self.state).render(live.config if live else None)  # tmpfs: gone after a reboot
        cmd += ["--config-dir", str(self.state.config_render)]
        env = {**server_environment(self.pass_env), "PROMETHEUS_MULTIPROC_DIR": str(self.state.metrics),
               **(sanitize.environment(Path(self.config.sanitize)) if self.config.sanitize else {})}
        with contextlib.nullcontext() if self.console else self.log.open("a") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None, pass_fds=fds,
                                         start_new_session=True, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HotplateError(f"the server exited at start (code {self.proc.returncode}); see {self.log}")
            if self.pid is not None and len(self.reports()) >= self.config.workers:
                self.down_reason = None
                self.up.set()
                return
            time.sleep(0.05)
        raise HotplateError(f"the server did not start within {timeout}s; see {self.log}")

    def listen(self) -> None:
        """Bind the app's address once, for every master this controller starts."""
        host, _, port = self.config.bind.rpartition(":")
        family, kind, proto, _, addr = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as e:
            sock.close()
            raise HotplateError(f"cannot listen on {self.config.bind}: {e}; is another server using it? "
                                "Pass another --bind") from None
        sock.listen(self.config.backlog)
        sock.set_inheritable(True)
        self.listener = sock

    def supervise(self, stopping: threading.Event, interval: float = 0.1) -> None:
        """Restart the master whenever it dies, on the release ``current``
        points to, with backoff while restarts keep failing."""
        backoff = 0.5
        while not stopping.wait(interval):
            if self.pid is not None:
                continue
            self.up.clear()
            self.down_reason = self.exit_reason()
            log.error("the app server died (%s); restarting it on %s", self.down_reason, self.state.live_release())
            self.restarts += 1
            try:
                self.start()
            except HotplateError as e:
                self.down_reason = f"{self.down_reason}; restart failed: {e}"
                log.error("%s; next try in %.1fs", self.down_reason, backoff)
                stopping.wait(backoff)
                backoff = min(backoff * 2, 10)
                continue
            backoff = 0.5
            log.warning("the app server is back (restart %d)", self.restarts)

    def exit_reason(self) -> str:
        """Why the master is gone, as far as this process can tell. (Not
        poll(): it answers None while another thread is reaping the child.)"""
        try:
            code = self.proc.wait(timeout=0.5) if self.proc is not None else None
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            return "the gunicorn master is not running"
        if code < 0:
            return f"the gunicorn master was killed by {signal.Signals(-code).name}"
        return f"the gunicorn master exited with code {code}"

    def why_down(self) -> str:
        """Why the server is not running: what the supervisor saw, or the exit status."""
        return self.down_reason or self.exit_reason()

    def wait_up(self, timeout: float) -> bool:
        """Wait until a master runs with its workers up (after a restart)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid is not None and self.up.is_set():
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 30) -> None:
        """Stop the app: the master and its workers, then whatever of the
        app's module code is left (its cgroups), and the rendered config
        sets. Nothing of the instance outlives this."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                if self.proc is not None:
                    self.proc.poll()
                time.sleep(0.05)
        cgroups.app_tree(self.state).kill()
        ConfigStore(self.state).forget_rendered()

    def report_changes(self) -> INotify:
        """A watch on the workers' reports (each one written: the moment
        to look again), kept from roll to roll: closing one waits for the
        kernel's RCU grace period, up to 20 ms measured after a roll was
        live. Emptied of what earlier rolls left; made anew if the
        directory was."""
        if self.changes is not None and any(e.mask & flags.IGNORED for e in self.changes.read(timeout=0)):
            self.changes.close()
            self.changes = None
        if self.changes is None:
            self.changes = INotify()
            self.changes.add_watch(self.state.workers, flags.MODIFY | flags.CREATE)
        return self.changes

    def reports(self) -> dict[int, Report]:
        """The workers' reports, believed only for children of the running
        master: a file in the run directory is no worker, and a dead
        master's workers that still drain are not its. Read from files and
        /proc, never by asking the master: ``status`` answers while the
        master is busy, or stopped."""
        master = self.pid
        return read_reports(self.state.workers, master) if master is not None else {}


@dataclass
class Generation:
    """The workers a roll brought up, and what they reported."""

    release: str
    pids: list[int]
    seconds: float
    reports: dict[int, Report] = field(default_factory=dict)
    reused: bool = False  # the workers serving it already: nothing new to bake


class Hold:
    """The next roll's workers, forked now and held (server/arbiter.py):
    their fork and cgroup are done by the time the deploy rolls. Asked of
    the master on a thread of its own: the master takes a few ms a worker
    to fork them, which the deploy spends checking out meanwhile."""

    def __init__(self, server: ServerProcess):
        self.server = server
        self.asked: list[int] | None | BaseException = None
        self.thread = threading.Thread(target=self.ask, name="hold", daemon=True)
        self.thread.start()

    def ask(self) -> None:
        try:
            self.asked = self.server.master.spawn(self.server.config.workers, held=True)
        except Unreachable:
            self.asked = None  # (the roll forks its own)
        except BaseException as e:  # (raised where the deploy waits for it)
            self.asked = e

    def before(self) -> list[int] | None:
        """Once the master has forked them: the workers there were before
        them, or None when the master could not be asked."""
        self.thread.join()
        if isinstance(self.asked, BaseException):
            raise self.asked
        return self.asked

    def let_go(self) -> None:
        """The held workers a deploy did not roll exit, unloaded (asked
        after the hold, which the master would otherwise take after it)."""
        self.thread.join()
        try:
            self.server.master.cancel()
        except Unreachable:
            pass  # (a master that is gone took them with it)


#: How long workers held as a push begins wait for its deploy to take them;
#: past this (a push still sending, or one that moved no tracked branch)
#: they exit, and its deploy forks its own.
AHEAD_S = 10.0


class Ahead:
    """Workers held as soon as a push's objects begin to arrive
    (controller/refwatch.py), some 10-40 ms before its ref moves and its
    deploy starts: a revert recalled with nothing to build rolls at once,
    and would otherwise wait for their fork and cgroup join. One hold at a
    time; the deploy that starts next takes it (Pipeline.server_up)."""

    def __init__(self, server: ServerProcess):
        self.server = server
        self.lock = threading.Lock()
        self.held: Hold | None = None
        self.timer: threading.Timer | None = None

    def hold(self) -> None:
        with self.lock:
            if self.held is None:
                self.held = Hold(self.server)
                self.timer = threading.Timer(AHEAD_S, self.expire)
                self.timer.daemon = True
                self.timer.start()

    def take(self) -> Hold | None:
        with self.lock:
            held, self.held = self.held, None
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
        return held

    def expire(self) -> None:
        if (held := self.take()) is not None:
            held.let_go()


def roll(server: ServerProcess, release: str, timeout: float = 30, held: list[int] | None = None) -> Generation:
    """Bring up a full generation of workers on ``release`` (already
    ``current``): the workers held for it (``held``: the workers before
    them), and any it lacks; then retire every other worker. Raises
    RolloutError if they do not come up."""
    start = time.monotonic()
    want = server.config.workers
    deadline = start + timeout
    changes = server.report_changes()
    if held is not None:
        before, going = held, _ask(server.master.go)
        if len(going) < want:  # (one died while held)
            _ask(server.master.spawn, want - len(going))
    else:
        before = _ask(server.master.spawn, want)

    def fresh(reports: dict[int, Report]) -> list[int]:
        return [pid for pid, r in reports.items() if pid not in before and r.release == release]

    reports = _until(server, changes, lambda r: len(fresh(r)) >= want, deadline)
    if reports is None:
        # Leave the worker count alone: the rollback's roll retires every
        # older worker, this failed generation included.
        raise RolloutError(f"only {len(fresh(server.reports()))} of {want} new workers reported release "
                           f"{release} within {timeout:.0f}s")
    _ask(server.master.retire, sorted(fresh(reports))[:want])
    serving = _until(server, changes, lambda r: _serving(r, release) == want, deadline)
    if serving is None:
        stale = [pid for pid, r in server.reports().items() if not r.retiring and r.release != release]
        raise RolloutError(f"workers {stale} still serve another release after the roll")
    serving = {pid: r for pid, r in serving.items() if not r.retiring}
    return Generation(release, sorted(serving), time.monotonic() - start, serving)


def _ask(call, *args):
    """A request to the master; one it cannot take is retried by the deploy's caller."""
    try:
        return call(*args)
    except Unreachable as e:
        raise RetryableError(str(e), "ServerUnreachable") from None


def _serving(reports: dict[int, Report], release: str) -> int:
    """How many workers accept connections, if every one of them serves
    ``release`` (else -1): exactly one full generation of it is the moment
    the deploy is live and the arbiter has settled on the new count."""
    accepting = [r for r in reports.values() if not r.retiring]
    return len(accepting) if all(r.release == release for r in accepting) else -1


def _until(server: ServerProcess, changes: INotify, test, deadline: float) -> dict[int, Report] | None:
    """The workers' reports once ``test`` holds for them, looked at again
    as each report is written (and every 20 ms: a worker that dies writes
    nothing); None at ``deadline``."""
    while True:
        reports = server.reports()
        if test(reports):
            return reports
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        changes.read(timeout=int(min(left, 0.02) * 1000) or 1)


@dataclass(frozen=True)
class GateSettings:
    bake_seconds: float = 2.0
    max_5xx_ratio: float = 0.1
    min_5xx: int = 5
    max_restarts: int = 1


def health_gate(server: ServerProcess, gen: Generation, release: ReleaseSpec, settings: GateSettings, emit) -> None:
    """Check the new generation: modules loaded, health routes 2xx, and during
    the bake window no crash loop and no jump in 5xx. Raises RolloutError."""
    for pid in gen.pids:
        for mod in gen.reports[pid].modules:
            if not mod.ok:
                raise RolloutError(f"module {mod.name} failed to load in worker {pid}: {mod.error}")
    base = f"http://{server.config.bind}"
    for mod in release.modules:
        if mod.health:
            status = _get_status(base + mod.health)
            if not 200 <= status < 300:
                raise RolloutError(f"health route {mod.health} of module {mod.name} answered {status}")
            emit(f"health {mod.health}: {status}")
    if settings.bake_seconds <= 0 or gen.reused:
        return
    emit(f"baking for {settings.bake_seconds:g}s: watching for crash loops and 5xx")
    seen: set[int] = set(gen.pids)
    end = time.monotonic() + settings.bake_seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(0.1, left))  # (the last look falls at the window's end, not up to 100 ms past it)
        reports = {pid: r for pid, r in server.reports().items()
                   if r.release == gen.release and not r.retiring}
        seen |= set(reports)
        requests = sum(r.counters["requests"] for r in reports.values())
        errors = sum(r.counters["errors_5xx"] for r in reports.values())
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
