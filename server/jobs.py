"""The job runner: runs queued background jobs (hp_job_start, jobs.c).

``python -m hotplate.server.jobs``, started and restarted by the gunicorn
master (server/gunicorn_app.py), never loads module code itself: each job
runs in a process of its own, forked for it, confined like a worker, on
the release that queued it. The runner claims jobs in order, at most
``--jobs`` at a time, stops those past their time limit or asked to cancel
and not stopping, and records how each ended when the job itself could not
(a crash, the memory limit, a kill).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import resource
import select
import signal
import socket
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import cgroups, libhotplate
from .confine import become, confine, die_with_parent, hide_other_processes, mapped_bytes
from .contract.layout import Layout
from .contract.release import ReleaseSpec
from .modules import ModuleSet, load_config, open_jobs, open_store, setup_process

log = logging.getLogger("hotplate.jobs")
POLL_S = 0.05
#: Seconds a runner with nothing to run waits before it exits (it is started again when a job is queued).
IDLE_EXIT_S = float(os.environ.get("HOTPLATE_JOB_RUNNER_IDLE", 10))
RELEASE_ID = re.compile(r"r[0-9a-f]{12}")
CANCEL_GRACE_S = 5
DEFAULT_TIMEOUT_MS = 3_600_000
DEFAULT_MEMORY = 1024 ** 3


@dataclass
class Running:
    id: str
    pid: int
    deadline: float
    timeout_ms: int
    cancel_by: float | None = None
    why_killed: str | None = None


class JobRunner:
    """:param wake: the socket workers poke when they queue a job, bound by
        the master (:func:`wake_socket`); with it, the runner exits once
        it has been idle for :data:`IDLE_EXIT_S`, and the master starts it
        again at the next poke. None: it polls, and runs until stopped."""

    def __init__(self, db: Path, releases: Path, jobs: int, config_dir: str | None, store: str,
                 dedicated: bool, wake: socket.socket | None = None):
        self.db_path, self.releases, self.jobs = db, releases, jobs
        self.config_dir, self.store, self.dedicated = config_dir, store, dedicated
        self.running: dict[int, Running] = {}
        self.stopping = False
        self.wake = wake

    def sql(self, query: str, args=()) -> tuple[list[tuple], int]:
        """One statement on a connection of its own (autocommit): a job
        process must not share one with the runner it was forked from.
        Returns its rows and how many rows it changed."""
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=5, isolation_level=None)) as db:
            cursor = db.execute(query, args)
            return cursor.fetchall(), cursor.rowcount

    def finish(self, job_id: str, state: str, error: str | None) -> None:
        """Record how a job ended, unless it has an outcome already."""
        self.sql("UPDATE jobs SET state=?, error=?, finished=? WHERE id=? AND state='running'",
                 (state, error, time.time(), job_id))

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        _, n = self.sql("UPDATE jobs SET state='failed', error='interrupted: the server stopped while it ran', "
                        "finished=? WHERE state='running'", (time.time(),))
        if n:
            log.warning("%d job(s) were interrupted by a server stop", n)
        idle_since = time.monotonic()
        while not self.stopping:
            self.reap()
            self.police()
            while len(self.running) < self.jobs and (job := self.claim()):
                self.start(job)
            if self.running:
                idle_since = time.monotonic()
            elif self.wake is not None and time.monotonic() - idle_since > IDLE_EXIT_S:
                return  # (nothing runs, nothing is queued: the master starts a runner at the next poke)
            if select.select([self.wake] if self.wake else [], [], [], POLL_S)[0]:  # a worker queued a job
                idle_since = time.monotonic()
                while True:
                    try:
                        self.wake.recv(64)
                    except BlockingIOError:
                        break
        for r in self.running.values():  # the server stops: so do its jobs
            os.kill(r.pid, signal.SIGKILL)
            self.finish(r.id, "failed", "interrupted: the server stopped while it ran")

    def claim(self) -> tuple | None:
        rows, _ = self.sql("UPDATE jobs SET state='running', started=?, runner=? WHERE id = (SELECT id FROM jobs "
                           "WHERE state='queued' ORDER BY created LIMIT 1) AND state='queued' "
                           "RETURNING id, module, function, release, arg", (time.time(), os.getpid()))
        return rows[0] if rows else None

    def start(self, job: tuple) -> None:
        job_id, module, function, release, arg = job
        release_dir = self.releases / release
        try:
            if not RELEASE_ID.fullmatch(release):  # the database is writable by module code: trust no path in it
                raise ValueError(f"{release!r} is not a release id")
            spec = ReleaseSpec.load(release_dir)
        except (OSError, ValueError) as e:
            self.finish(job_id, "failed", f"release {release} is gone ({e}): queue the job again")
            return
        timeout_ms = spec.limits.job_timeout or DEFAULT_TIMEOUT_MS
        pid = os.fork()
        if pid == 0:
            code = 1
            if self.wake is not None:
                self.wake.close()
            try:
                code = self.child(job_id, module, function, release_dir, spec, arg or b"")
            except BaseException as e:
                log.exception("job %s could not run", job_id)
                self.finish(job_id, "failed", f"the job could not run: {type(e).__name__}: {e}")
            finally:
                os._exit(code)
        self.running[pid] = Running(job_id, pid, time.monotonic() + timeout_ms / 1000, timeout_ms)
        log.info("job %s: %s.%s on release %s in process %d", job_id, module, function, release, pid)

    def child(self, job_id: str, module: str, function: str, release_dir: Path, spec: ReleaseSpec,
              arg: bytes) -> int:
        """In the job's own process: load the release as a worker does, run
        the function, record the outcome."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        die_with_parent(signal.SIGKILL)  # a runner killed with -9 leaves no job behind to finish unrecorded
        setup_process()
        open_store(self.store)
        load_config(spec, self.config_dir)
        confine(spec, dedicated=self.dedicated)
        ffi, lib = libhotplate.load()
        open_jobs(self.db_path, release_dir.name)
        modules = ModuleSet.load(release_dir)
        bound_memory(spec.limits.job_memory or DEFAULT_MEMORY)
        mod = next((m for m in modules.modules if m.name == module), None)
        fn = lib.hp_rt_module_sym(mod.handle, function.encode()) if mod and mod.ok else ffi.NULL
        if fn == ffi.NULL:
            why = mod.error if mod and not mod.ok else f"module {module} exports no function {function}"
            self.finish(job_id, "failed", why)
            return 1
        rc, sig = ffi.new("int *"), ffi.new("int *")
        result = lib.hp_rt_job_run(mod.handle, fn, job_id.encode(), arg, len(arg), rc, sig)
        if result == libhotplate.RT_CRASHED:
            self.finish(job_id, "failed", f"the job crashed ({signal.Signals(sig[0]).name})")
            return 1
        cancel = self.sql("SELECT cancel FROM jobs WHERE id=?", (job_id,))[0][0][0]
        state = "cancelled" if cancel else "succeeded" if rc[0] == 0 else "failed"
        self.finish(job_id, state, None if state != "failed" else f"{function} returned {rc[0]} (HP_ERROR)")
        modules.close()
        return 0

    def reap(self) -> None:
        """Record jobs whose process ended without an outcome of its own."""
        while self.running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            r = self.running.pop(pid, None)
            if r is None:
                continue
            if r.why_killed:
                self.finish(r.id, "cancelled" if r.why_killed == "cancelled" else "failed",
                            None if r.why_killed == "cancelled" else r.why_killed)
            elif os.WIFSIGNALED(status):
                name = signal.Signals(os.WTERMSIG(status)).name
                self.finish(r.id, "failed", f"the job process died ({name}; over its job_memory?)")
            else:
                self.finish(r.id, "failed", f"the job process exited with {os.WEXITSTATUS(status)} before it ended")

    def police(self) -> None:
        """Stop jobs past their time limit, and cancelled ones that go on."""
        if not self.running:
            return
        now = time.monotonic()
        cancelled = {row[0] for row in self.sql(
            f"SELECT id FROM jobs WHERE cancel=1 AND state='running' AND id IN ({','.join('?' * len(self.running))})",
            [r.id for r in self.running.values()])[0]}
        for r in self.running.values():
            if r.why_killed:
                continue
            if now > r.deadline:
                r.why_killed = f"stopped: ran past its job_timeout of {r.timeout_ms / 1000:g} s"
            elif r.id in cancelled:
                r.cancel_by = r.cancel_by or now + CANCEL_GRACE_S
                if now > r.cancel_by:
                    r.why_killed = "cancelled"
            if r.why_killed:
                os.kill(r.pid, signal.SIGKILL)


def wake_socket(data: Path) -> socket.socket | None:
    """The datagram socket workers poke when they queue a job (jobs.c
    wake_runner): abstract, named after the directory of the jobs database
    (the workers' data directory, which exists before any of them). The
    master binds it before it forks a worker, and hands it to each runner
    it starts. None if it is taken (by what outlived an earlier master):
    then a runner runs all along, and finds new jobs by its poll."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        st = os.stat(data)
        sock.bind(f"\0hotplate-jobs-{st.st_dev:x}-{st.st_ino:x}")
    except OSError as e:
        log.warning("no wake-up socket (%s): the job runner runs all along; new jobs start within %g s",
                    e, POLL_S)
        sock.close()
        return None
    sock.setblocking(False)
    return sock


def bound_memory(allowance: int) -> None:
    """Let the job map ``allowance`` bytes more than the process has mapped
    now (Python, the runtime, the release): job_memory is what the job
    itself may allocate."""
    limit = mapped_bytes() + allowance
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit if hard == resource.RLIM_INFINITY else min(limit, hard)))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m hotplate.server.jobs")
    p.add_argument("--state", required=True, type=Layout, help="the state directory (server/contract/layout.py): "
                   "its jobs database, its releases, and the runner's cgroup named after it")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--config-dir")
    p.add_argument("--store", required=True)
    p.add_argument("--user")
    p.add_argument("--wake-fd", type=int, help="the wake-up socket, bound by the master (wake_socket)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="[jobs] %(message)s", stream=sys.stderr)
    master = os.getppid()
    if cgroups.available() is None:  # the runner and every job it forks: one tree, ended whole
        tree = cgroups.app_tree(args.state, "jobs")
        tree.make()
        tree.join()
    libhotplate.load()  # before the switch: the workers' account may not read the runtime's cache
    if args.user:
        hide_other_processes()
        become(args.user)
    die_with_parent(signal.SIGTERM)  # after the switch, which clears it (prctl(2)): the master gone, so is the runner
    if os.getppid() != master:
        return
    open_jobs(args.state.jobs_db, "")  # makes the tables
    wake = socket.socket(fileno=args.wake_fd) if args.wake_fd is not None else None
    JobRunner(args.state.jobs_db, args.state.releases, args.jobs, args.config_dir, args.store, bool(args.user),
              wake).run()


if __name__ == "__main__":
    main()
