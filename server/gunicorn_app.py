"""Run the dispatcher under gunicorn, loading modules in workers only.

The master imports Python (Flask, cffi, this package) once, with
``preload_app``; each worker, after fork, resolves the ``current`` release
link and loads that release's modules. Rolling onto a new release is
therefore: switch ``current``, send the master SIGHUP. New workers load the
new modules; old workers finish their requests and exit with theirs.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from gunicorn.app.base import BaseApplication

from .app import create_app
from .config import ServerConfig
from .modules import ModuleSet, setup_process


class HotplateServer(BaseApplication):
    """A gunicorn application serving the release that ``current`` points to.

    :param current: path of the release (usually the ``current`` symlink).
    :param state_dir: where the pid file and control socket go, and the
        workers' working directory (module files like SQLite databases).
    """

    def __init__(self, current: Path, config: ServerConfig, state_dir: Path | None = None):
        self.current = Path(current)
        self.config = config
        self.pidfile = state_dir / "server.pid" if state_dir else None
        self.control_socket = state_dir / "gunicorn.ctl" if state_dir else None
        self.workdir = state_dir
        self.dispatcher = create_app(config)
        super().__init__()

    def load_config(self) -> None:
        c = self.config
        settings = {
            "bind": c.bind, "workers": c.workers, "threads": c.threads, "worker_class": "server.worker.HotplateWorker",
            "preload_app": True, "graceful_timeout": c.graceful_timeout, "timeout": c.timeout,
            "keepalive": c.keepalive, "backlog": c.backlog,
            "limit_request_fields": c.max_header_fields, "limit_request_field_size": c.max_header_size,
            "limit_request_line": c.max_request_line, "accesslog": c.accesslog,
            "post_worker_init": self.post_worker_init, "worker_exit": self.worker_exit,
            "proc_name": "hotplate", "pidfile": str(self.pidfile) if self.pidfile else None,
            "control_socket": str(self.control_socket) if self.control_socket else None,
            "control_socket_disable": self.control_socket is None,
        }
        for key, value in settings.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self):
        return self.dispatcher

    def post_worker_init(self, worker) -> None:
        """Load the current release's modules into this worker. Never raises:
        a worker boot error would make gunicorn halt the whole server."""
        logger = logging.getLogger("hotplate")
        logger.handlers = worker.log.error_log.handlers
        logger.setLevel(worker.log.error_log.level)
        logger.propagate = False
        try:
            if self.workdir:
                os.chdir(self.workdir)
            setup_process()
            release = Path(os.path.realpath(self.current))
            self.dispatcher.attach(ModuleSet.load(release))
            logger.info("worker %d serves release %s", os.getpid(), self.dispatcher.modules.release_id)
        except Exception:
            logger.exception("worker %d could not load release %s; serving only /_hotplate/", os.getpid(), self.current)

    def worker_exit(self, server, worker) -> None:
        if self.dispatcher.modules is not None:
            self.dispatcher.modules.close()
