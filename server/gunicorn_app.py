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
import json
import logging
import os
import pwd
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from gunicorn.app.base import BaseApplication
from prometheus_client import multiprocess

from . import cgroups, control, jobs, libhotplate, metrics, pidfile
from .arbiter import HotplateArbiter
from .contract import report
from .contract.layout import Layout
from .app import create_app
from .config import ServerConfig
from .confine import confine, die_with_parent, drop_groups, hide_other_processes
from .contract.release import ReleaseSpec
from .modules import ModuleSet, load_config, open_jobs, open_store, setup_process
from .websocket.fleet import host_id
from .websocket.hub import Hub


#: Seconds a held worker waits for its word at most (a build of many
#: modules may take minutes); then it exits, having loaded nothing.
HOLD_S = 600


def wait_word(worker, go: int) -> bool:
    """A held worker, until the master says go (True) or closes its pipe
    (False: cancelled), heartbeating meanwhile so that the master does not
    take it for a hung worker. The arbiter's signal handlers, inherited by
    the fork, would only queue a SIGTERM here: the default ends it."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    deadline = time.monotonic() + HOLD_S
    try:
        while (left := deadline - time.monotonic()) > 0:
            if select.select([go], [], [], min(left, 1.0))[0]:
                return os.read(go, 1) == b"g"
            worker.tmp.notify()
        return False
    finally:
        os.close(go)


class Supervised:
    """A helper process of the master (the job runner), started again if it
    exits, until :meth:`stop`. It dies with the master (PR_SET_PDEATHSIG).

    :param wake: a socket its work is announced on, handed to it
        (``--wake-fd``): a helper that exits cleanly (idle) is started
        again only once the socket has something to read. So the job
        runner runs while an app has jobs, not all along (issue 23)."""

    RESTART_S = 1.0

    def __init__(self, cmd: list[str], what: str, wake: socket.socket | None = None):
        self.wake = wake
        self.cmd = [*cmd, "--wake-fd", str(wake.fileno())] if wake is not None else cmd
        self.what = what
        self.stopping = threading.Event()
        self.proc: subprocess.Popen | None = None
        threading.Thread(target=self.keep, daemon=True, name=what).start()

    def keep(self) -> None:
        log = logging.getLogger("hotplate")
        while not self.stopping.is_set():
            self.proc = subprocess.Popen(self.cmd, pass_fds=(self.wake.fileno(),) if self.wake else ())
            code = self.proc.wait()
            if self.stopping.is_set():
                return
            if code == 0 and self.wake is not None:
                while not select.select([self.wake], [], [], 1.0)[0] and not self.stopping.is_set():
                    pass  # (idle: until a worker announces a job)
            else:
                log.error("%s exited with %s; starting it again in %g s", self.what, code, self.RESTART_S)
                self.stopping.wait(self.RESTART_S)

    def forget(self) -> None:
        """In a forked worker: let go of the master's wake socket."""
        if self.wake is not None:
            self.wake.close()

    def stop(self) -> None:
        self.stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Fence:
    """The master's guard for when its controller dies mid-deploy (issue 20).

    The master outlives a controller killed with -9. If that controller had
    switched ``current`` to a release that had not passed everything (its
    gate, a fleet's rollout), the master would go on serving code nobody
    verified. So while a controller's record says it runs
    (``run/controller.json``) but its process is gone, the master puts
    ``current`` back on ``verified`` and rolls its workers onto it itself
    (SIGHUP: new workers first). A controller that stopped on purpose
    removes its record: nothing to fence then.

    It also tells the workers, for ``/_hotplate/ready``, whether a living
    controller gates the live release (:attr:`Layout.fenced` absent)."""

    INTERVAL_S = 0.5

    def __init__(self, layout: Layout, arbiter, workers: int):
        self.layout, self.arbiter, self.workers = layout, arbiter, workers
        self.told: bool | None = None  # whether a living controller gates live, as last written
        threading.Thread(target=self.watch, daemon=True, name="fence").start()

    def watch(self) -> None:
        while True:
            try:
                self.check()
            except Exception:  # the master must survive anything here
                logging.getLogger("hotplate").exception("fence: checking the live release failed")
            time.sleep(self.INTERVAL_S)

    def check(self) -> None:
        try:
            pid = int(json.loads(self.layout.controller_info.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            pid = None
        verified, live = self.layout.verified(), self.layout.live_release()
        gated = pid is None or report.pid_alive(pid)  # (no record: stopped on purpose, or `serve`)
        if not gated and verified is not None and live != verified.release and \
                (self.layout.releases / verified.release).is_dir():
            logging.getLogger("hotplate").error(
                "fence: the controller (pid %s) is gone and %s is live but was never verified; going back to %s",
                pid, live, verified.release)
            self.layout.switch(verified.release, verified.commit)
            self.arbiter.ask_refresh(self.workers)  # (a roll cut short may have left more, or held some)
            live = verified.release
        if gated != self.told:
            if gated:
                self.layout.fenced.unlink(missing_ok=True)
            else:
                self.layout.fenced.touch()
            self.told = gated


class HotplateServer(BaseApplication):
    """A gunicorn application serving the release that ``current`` points to.

    :param layout: the state directory (server/contract/layout.py): the
        ``current`` link, the run directory (pid file, the master's socket, the
        workers' reports and metrics), the workers' working directory.
    """

    def __init__(self, layout: Layout, config: ServerConfig):
        self.layout = layout
        self.config = config
        self.channel: report.Channel | None = None  # in a worker: its report files (post_fork)
        self.release: Path | None = None  # in a worker: the release it loads, resolved once (post_fork)
        self.dispatcher = create_app(config)
        self.dispatcher.layout = layout
        self.job_runner: Supervised | None = None
        self.listener: control.Listener | None = None  # the controller's line (the master's; closed in its children)
        self.host = host_id()  # with the workers' pids, names publishers across a fleet
        # A page the workers share, each its connection count, to size their share of the CPUs (serve.c).
        self.shares = os.memfd_create("hotplate-shares")
        os.ftruncate(self.shares, 4096)
        libhotplate.load()  # hotplate's own runtime, inherited by workers, whose account may not read its cache
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
            "proc_name": "hotplate",
            "worker_tmp_dir": "/dev/shm" if os.access("/dev/shm", os.W_OK) else None,  # heartbeats: no disk
            "control_socket_disable": True,  # (the controller's line is server/control.py's)
        }
        if c.user:  # gunicorn sets each worker's gid and uid after post_fork (its initgroups would keep gid 0)
            settings.update(user=c.user, group=pwd.getpwnam(c.user).pw_gid)
        for key, value in settings.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self):
        return self.dispatcher

    def run(self) -> None:
        """Serve, the pid file in place meanwhile (gunicorn's own would be replaced, needing a new block)."""
        master = os.getpid()
        pidfile.write(self.layout.server_pid, master)
        try:
            HotplateArbiter(self).run()
        except RuntimeError as e:  # (what BaseApplication.run, which this replaces, does)
            sys.exit(f"\nError: {e}\n")
        finally:
            if os.getpid() == master:  # (a worker leaves through here too)
                pidfile.write(self.layout.server_pid, None)

    def when_ready(self, server) -> None:
        """Once the app is preloaded and before the first fork, move the
        master's objects out of the collector's reach, so that a new worker's
        GC does not touch (and copy) the pages it shares with the master.
        Only once: objects the master makes later, roll after roll, must stay
        collectable. Fold the counters of workers a dead master left behind.
        (Workers set their own resource limits: server/confine.py.)"""
        logger = logging.getLogger("hotplate")  # gunicorn's error log, in the master and (forked) its workers
        logger.handlers = server.log.error_log.handlers
        logger.setLevel(server.log.error_log.level)
        logger.propagate = False
        self.layout.workers.mkdir(parents=True, exist_ok=True)
        report.fold_dead(self.layout.workers)
        self.sweep()
        Fence(self.layout, server, self.config.workers)
        self.listener = control.Listener(self.layout.master_socket, server.wakeup)
        gc.collect()
        gc.freeze()
        if self.config.jobs:
            cmd = [sys.executable, "-m", "hotplate.server.jobs", "--state", str(self.layout.root),
                   "--jobs", str(self.config.jobs),
                   "--store", self.store_url, *(["--config-dir", self.config.config_dir] if self.config.config_dir
                                                else []), *(["--user", self.config.user] if self.config.user else [])]
            self.job_runner = Supervised(cmd, "the job runner", jobs.wake_socket(self.layout.data))

    def forget(self) -> None:
        """In a child of the master: let go of what only the master may hold."""
        if self.job_runner is not None:
            self.job_runner.forget()
        if self.listener is not None:
            self.listener.close()

    def on_exit(self, server) -> None:
        if self.listener is not None:
            self.listener.close()
            self.layout.master_socket.unlink(missing_ok=True)
        if self.job_runner is not None:
            self.job_runner.stop()
        self.sweep(everything=True)
        cgroups.app_tree(self.layout).remove()

    def sweep(self, everything: bool = False, runner: bool = True, workers=()) -> None:
        """End the process trees of this app that nothing will end: what
        module code forked from a worker that is gone, and (``runner``) a
        job runner a killed master left. A worker of a killed master that
        still drains its requests is left to finish them, and so is the
        tree of one of this master's ``workers`` that has not joined it
        yet (a join may wait on the kernel), unless ``everything`` (exit:
        nothing of the app may outlive its master)."""
        for name in cgroups.app_tree(self.layout).children():
            tree = cgroups.app_tree(self.layout, name)
            if name.startswith("w") and name[1:].isdigit():
                if everything or (int(name[1:]) not in workers and int(name[1:]) not in tree.pids()):
                    tree.kill()
            elif name == "jobs" and (runner or everything):
                tree.kill()
            elif name.startswith("smoke-") and everything:  # (a check in progress is its controller's to end)
                tree.kill()

    @property
    def store_url(self) -> str:
        return self.config.store or f"lmdb:{self.layout.store}"

    def post_fork(self, server, worker) -> None:
        """In the new worker, still root (gunicorn drops to the workers'
        account after this): make and open its report, counter and metric
        files (their directories are root's, so module code cannot plant
        anything there), put it in a cgroup of its own (memory and tasks
        bounded by the kernel; whatever it forks dies with it), and give it
        no groups but the passage group, and a /proc that shows nothing of
        the controller, the master or the other workers. A worker forked
        ahead of its release (held: server/arbiter.py) does all that, then
        waits for its word; only then does it resolve ``current`` and
        bound its cgroup by that release. Never raises: a worker boot
        error would halt the server."""
        log = logging.getLogger("hotplate")
        pid = os.getpid()
        self.forget()
        held, server.holding = server.holding, None
        server.forget_held()  # (never raises: a worker boot error would halt the server)
        try:
            self.channel = report.open_channel(self.layout.workers, pid)
            metrics.prepare(self.layout.metrics, pid, pwd.getpwnam(self.config.user).pw_uid if self.config.user else None)
        except OSError as e:
            log.error("worker %d: cannot make its report files (%s); it cannot report", pid, e)
        tree = cgroups.app_tree(self.layout, f"w{pid}") if cgroups.available() is None else None
        try:
            if tree is not None:
                tree.make()
                tree.join()  # (the kernel may wait a grace period here: a held worker waits it out ahead)
        except (OSError, ValueError) as e:
            log.error("worker %d: no cgroup of its own (%s): the kernel does not bound its memory, and what it "
                      "forks may outlive it", pid, e)
            tree = None
        if self.config.user:
            drop_groups()
            hide_other_processes()
        if held is not None:
            os.close(held[1])
            if not wait_word(worker, held[0]):
                os._exit(0)  # cancelled, or the master is gone: nothing was loaded
        self.release = Path(os.path.realpath(self.layout.current)) if self.layout.current.exists() else None
        try:
            if tree is not None:
                self.bound_tree(tree)
        except (OSError, ValueError) as e:
            log.error("worker %d: its cgroup is not bounded (%s): the kernel does not bound its memory", pid, e)

    def bound_tree(self, tree: cgroups.Tree) -> None:
        """Bound this worker's cgroup: memory at the release's max_rss plus a margin, and its tasks."""
        spec = ReleaseSpec.load(self.release) if self.release is not None else None
        max_rss = self.max_rss(spec)
        tree.make(memory=cgroups.memory_limit(max_rss) if max_rss else None,
                  tasks=spec.limits.processes if spec is not None else None)

    def post_worker_init(self, worker) -> None:
        """Load the release resolved at fork into this worker and report.
        Never raises: a worker boot error would make gunicorn halt the server."""
        logger = logging.getLogger("hotplate")
        channel = self.channel or report.Channel(os.open(os.devnull, os.O_WRONLY), -1)
        # A worker whose master died stops accepting at once, as a retired one: gunicorn's own look at its
        # parent comes once a second, and meanwhile it would go on serving beside a new master's roll.
        die_with_parent(signal.SIGTERM)  # (set here: after the switch of account, which clears it)
        if os.getppid() != worker.ppid:
            worker.alive = False
        try:
            os.chdir(self.layout.data)
            if self.channel is not None:
                self.dispatcher.counters = self.channel.counters()
            if self.release is None:
                logger.info("worker %d: no release yet; serving only /_hotplate/", os.getpid())
                channel.publish(None, [])
                return
            setup_process()
            open_store(self.store_url)
            spec = ReleaseSpec.load(self.release)
            load_config(spec, self.config.config_dir)
            open_jobs(self.layout.jobs_db, spec.id)
            confine(spec, dedicated=bool(self.config.user), sanitized=bool(self.config.sanitize),
                    max_rss=self.max_rss(spec))
            modules = ModuleSet.load(self.release)
            self.bound(worker, modules.spec)
            self.dispatcher.attach(modules)
            metrics.declare(modules.routes)
            self.start_hub(logger)
            channel.publish(modules.release_id, [report.ModuleReport(m.name, m.ok, m.error) for m in modules.modules],
                            hub=self.dispatcher.hub is not None)
            logger.info("worker %d serves release %s", os.getpid(), modules.release_id)
        except Exception as e:
            logger.exception("worker %d could not load release %s; serving only /_hotplate/", os.getpid(), self.release)
            channel.publish(None, [], error=f"{type(e).__name__}: {e}")

    def max_rss(self, spec: ReleaseSpec | None) -> int:
        """The release's memory ceiling per worker: its manifest's, else the server's."""
        return self.config.max_rss if spec is None or spec.limits.max_rss is None else spec.limits.max_rss

    def bound(self, worker, spec: ReleaseSpec) -> None:
        """Apply the per-worker limits: the manifest's, else the server's."""
        requests = self.config.max_requests if spec.limits.max_requests is None else spec.limits.max_requests
        worker.max_requests = requests + random.randint(0, requests // 10) if requests else sys.maxsize
        worker.max_rss = self.max_rss(spec)

    def start_hub(self, logger: logging.Logger) -> None:
        """Start the WebSocket hub; without one, HTTP still serves and
        WebSocket routes answer 503."""
        hub = Hub(self.dispatcher, self.config, self.layout, self.host)
        try:
            hub.start()
        except OSError as e:
            logger.error("worker %d: WebSockets and publications are off: cannot open the hub's sockets: %s",
                         os.getpid(), e)
            return
        self.dispatcher.hub = hub

    def child_exit(self, server, worker) -> None:
        """In the master, once a worker is gone (however it died): end what
        its module code forked, say so if the kernel killed it for its
        memory, keep its counters, and drop its live gauges (its counters'
        files stay: totals); and off the arbiter's books."""
        server.gone(worker.pid)
        tree = cgroups.app_tree(self.layout, f"w{worker.pid}")
        if tree.oom_kills():
            logging.getLogger("hotplate").error(
                "worker %d was killed by the kernel: its memory passed its limit (limits.max_rss plus a margin) "
                "while a call ran", worker.pid)
        tree.kill()
        self.sweep(runner=False, workers=server.WORKERS)
        report.fold_dead(self.layout.workers)
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            multiprocess.mark_process_dead(worker.pid)

    def worker_exit(self, server, worker) -> None:
        if self.dispatcher.modules is not None:
            self.dispatcher.modules.close()
