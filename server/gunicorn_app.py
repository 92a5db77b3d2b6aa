"""Run the dispatcher under gunicorn, loading modules in workers only.

The master imports Python (Flask, cffi, this package) once, with
``preload_app``; each worker, after fork, resolves the ``current`` release
link and loads that release's modules. Rolling onto a new release is
therefore: switch ``current``, start new workers, retire the old ones (see
controller/rollout.py). New workers load the new modules; old workers finish
their requests and exit with theirs.
"""
from __future__ import annotations

import gc
import logging
import os
import pwd
import random
import subprocess
import sys
import threading
from pathlib import Path

from gunicorn.app.base import BaseApplication
from prometheus_client import multiprocess

from . import report, runtime
from .app import create_app
from .config import ServerConfig
from .confine import confine, hide_other_processes, set_dumpable
from .contract import Limits, ReleaseSpec
from .modules import ModuleSet, load_config, open_jobs, open_store, setup_process
from .websocket.fleet import host_id
from .websocket.hub import Hub


class Supervised:
    """A helper process of the master (the job runner), started again if it
    exits, until :meth:`stop`. It dies with the master (PR_SET_PDEATHSIG)."""

    RESTART_S = 1.0

    def __init__(self, cmd: list[str], what: str):
        self.cmd, self.what = cmd, what
        self.stopping = threading.Event()
        self.proc: subprocess.Popen | None = None
        threading.Thread(target=self.keep, daemon=True, name=what).start()

    def keep(self) -> None:
        log = logging.getLogger("hotplate")
        while not self.stopping.is_set():
            self.proc = subprocess.Popen(self.cmd)
            code = self.proc.wait()
            if not self.stopping.is_set():
                log.error("%s exited with %s; starting it again in %g s", self.what, code, self.RESTART_S)
                self.stopping.wait(self.RESTART_S)

    def stop(self) -> None:
        self.stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class HotplateServer(BaseApplication):
    """A gunicorn application serving the release that ``current`` points to.

    :param current: path of the release (usually the ``current`` symlink).
    :param run_dir: pid file, control socket, and ``workers/`` where each
        worker reports the release it serves and its request counters.
    :param workdir: the workers' working directory (module files like SQLite
        databases), usually the state directory.
    """

    def __init__(self, current: Path, config: ServerConfig, run_dir: Path, workdir: Path):
        self.current = Path(current)
        self.config = config
        self.run_dir = Path(run_dir)
        self.reports = self.run_dir / "workers"
        self.workdir = Path(workdir)
        self.dispatcher = create_app(config)
        self.job_runner: Supervised | None = None
        self.host = host_id()  # with the workers' pids, names publishers across a fleet
        runtime.load()  # hotplate's own runtime, inherited by workers, whose account may not read its cache
        super().__init__()

    def load_config(self) -> None:
        c = self.config
        settings = {
            "bind": c.bind, "workers": c.workers, "threads": c.threads,
            "worker_class": "hotplate.server.worker.HotplateWorker",
            "preload_app": True, "graceful_timeout": c.graceful_timeout, "timeout": c.timeout,
            "keepalive": c.keepalive, "backlog": c.backlog, "worker_connections": c.max_connections,
            "limit_request_fields": c.max_header_fields, "limit_request_field_size": c.max_header_size,
            "limit_request_line": c.max_request_line, "accesslog": c.accesslog,
            "when_ready": self.when_ready, "post_fork": self.post_fork, "post_worker_init": self.post_worker_init,
            "worker_exit": self.worker_exit, "on_exit": self.on_exit,
            "child_exit": self.child_exit,
            "proc_name": "hotplate", "pidfile": str(self.run_dir / "server.pid"),
            "control_socket": str(self.run_dir / "gunicorn.ctl"),
        }
        if c.user:  # gunicorn sets each worker's gid and uid after post_fork (its initgroups would keep gid 0)
            settings.update(user=c.user, group=pwd.getpwnam(c.user).pw_gid)
        for key, value in settings.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self):
        return self.dispatcher

    def when_ready(self, server) -> None:
        """Once the app is preloaded and before the first fork, move the
        master's objects out of the collector's reach, so that a new worker's
        GC does not touch (and copy) the pages it shares with the master.
        Only once: objects the master makes later, roll after roll, must stay
        collectable. Fold the counters of workers a dead master left behind.
        (Workers set their own resource limits: server/confine.py.)"""
        self.reports.mkdir(parents=True, exist_ok=True)
        report.fold_dead(self.reports)
        gc.collect()
        gc.freeze()
        if self.config.jobs:
            cmd = [sys.executable, "-m", "hotplate.server.jobs", "--db", str(self.workdir / "jobs.db"),
                   "--releases", str(self.current.parent / "releases"), "--jobs", str(self.config.jobs),
                   "--store", self.store_url, *(["--config-dir", self.config.config_dir] if self.config.config_dir
                                                else []), *(["--user", self.config.user] if self.config.user else [])]
            self.job_runner = Supervised(cmd, "the job runner")

    def on_exit(self, server) -> None:
        if self.job_runner is not None:
            self.job_runner.stop()

    @property
    def store_url(self) -> str:
        return self.config.store or f"lmdb:{self.workdir.resolve() / 'store'}"

    def post_fork(self, server, worker) -> None:
        """In the new worker, still root when a workers' account is set: no
        supplementary groups (root's would stay), and a /proc that shows
        nothing of the controller or the master."""
        if self.config.user:
            os.setgroups([])
            hide_other_processes()

    def post_worker_init(self, worker) -> None:
        """Load the current release's modules into this worker and report.
        Never raises: a worker boot error would make gunicorn halt the server."""
        logger = logging.getLogger("hotplate")
        logger.handlers = worker.log.error_log.handlers
        logger.setLevel(worker.log.error_log.level)
        logger.propagate = False
        try:
            os.chdir(self.workdir)
            self.reports.mkdir(parents=True, exist_ok=True)
            self.dispatcher.counters = report.Counters(self.reports / f"{os.getpid()}.stats")
            if not self.current.exists():
                logger.info("worker %d: no release yet; serving only /_hotplate/", os.getpid())
                report.publish(self.reports, None, [])
                return
            setup_process()
            open_store(self.store_url)
            release = Path(os.path.realpath(self.current))
            if self.config.user:
                # The switch of account made it not dumpable: with hidepid, the
                # workers would not see each other (their peer checks read /proc).
                set_dumpable(True)
            spec = ReleaseSpec.load(release)
            load_config(spec, self.config.config_dir)
            open_jobs(self.workdir.resolve() / "jobs.db", spec.id)
            confine(spec, dedicated=bool(self.config.user), sanitized=bool(self.config.sanitize))
            modules = ModuleSet.load(release)
            self.bound(worker, modules.spec.limits)
            self.dispatcher.attach(modules)
            self.start_hub(logger)
            report.publish(self.reports, modules.release_id,
                           [report.ModuleReport(m.name, m.ok, m.error) for m in modules.modules],
                           hub=self.dispatcher.hub is not None)
            logger.info("worker %d serves release %s", os.getpid(), modules.release_id)
        except Exception as e:
            logger.exception("worker %d could not load release %s; serving only /_hotplate/", os.getpid(), self.current)
            report.publish(self.reports, None, [], error=f"{type(e).__name__}: {e}")

    def bound(self, worker, limits: Limits) -> None:
        """Apply the per-worker limits: the manifest's, else the server's."""
        requests = self.config.max_requests if limits.max_requests is None else limits.max_requests
        worker.max_requests = requests + random.randint(0, requests // 10) if requests else sys.maxsize
        worker.max_rss = self.config.max_rss if limits.max_rss is None else limits.max_rss

    def start_hub(self, logger: logging.Logger) -> None:
        """Start the WebSocket hub; without one, HTTP still serves and
        WebSocket routes answer 503."""
        hub = Hub(self.dispatcher, self.config, self.run_dir, self.current, self.workdir.resolve() / "jobs.db",
                  self.host)
        try:
            hub.start()
        except OSError as e:
            logger.error("worker %d: WebSockets and publications are off: cannot open the hub's sockets: %s",
                         os.getpid(), e)
            return
        self.dispatcher.hub = hub

    def child_exit(self, server, worker) -> None:
        """In the master, once a worker is gone (however it died): keep its
        counters, and drop its live gauges (its counters' files stay: totals)."""
        report.fold_dead(self.reports)
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            multiprocess.mark_process_dead(worker.pid)

    def worker_exit(self, server, worker) -> None:
        if self.dispatcher.modules is not None:
            self.dispatcher.modules.close()
