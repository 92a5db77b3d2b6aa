"""Smoke check: load a release in a throwaway process before it may go live.

:func:`check` loads every module, checks its ABI and handler symbols, runs
hp_init and hp_fini, and lists ``{"module", "source", "error"}`` for each
failure. It runs in a fork of the gunicorn master, which has the runtime
loaded already (:func:`keep`, asked for through server/contract/control.py),
or as ``python -m hotplate.server.smoke RELEASE_DIR WORKDIR USER CONFIG_DIR
RUN_DIR`` (empty strings for none), which prints that list as JSON (no
master runs, or a sanitizer build, whose runtime must be preloaded into a
fresh interpreter). A module that kills the process fails the release, not
a server. Given the server's run directory, the check runs in a cgroup of
its own (``smoke-PID``, server/cgroups.py), which the controller ends
afterwards with all that hp_init forked.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import traceback
from pathlib import Path

from . import cgroups
from .config import ServerConfig
from .confine import become, confine, hide_other_processes
from .contract.control import receive, send
from .contract.layout import Layout
from .contract.release import ReleaseSpec
from .modules import ModuleSet, load_config, open_store, setup_process


def check(release_dir: str, workdir: str = "", user: str = "", config_dir: str = "", state: str = "",
          joined: bool = False) -> list[dict]:
    """Load, init and fini every module in ``workdir``, as ``user`` (from
    root) if given, confined like a worker (in its own cgroup, given the
    server's ``state`` directory; ``joined``: this process is in it
    already), with the release's config set from ``config_dir``; return
    the failures."""
    spec = ReleaseSpec.load(Path(release_dir))
    max_rss = spec.limits.max_rss or ServerConfig.max_rss
    if state:
        enclose(Layout(state), spec, max_rss, join=not joined)
    setup_process()  # loads the runtime, which the workers' account may not be able to read
    if workdir:
        os.chdir(workdir)
    if user:
        hide_other_processes()
        become(user)
    open_store("lmdb:store")  # an empty store of its own, in the scratch directory
    try:
        load_config(spec, config_dir or None)
    except OSError as e:
        return [{"module": "(config)", "source": "hotplate config", "error": str(e)}]
    confine(spec, dedicated=bool(user), sanitized=bool(os.environ.get("HOTPLATE_SANITIZE")),
            max_rss=max_rss)
    modules = ModuleSet.load(release_dir)
    modules.close()
    return [{"module": m.name, "source": m.source, "error": m.error} for m in modules.modules if not m.ok]


def enclose(layout: Layout, spec: ReleaseSpec | None, max_rss: int = 0, join: bool = True) -> None:
    """Join this check's cgroup (``join``), bounded as a worker of the
    release is (given ``spec``): a check forked ahead joins before its
    release exists, and is bounded once it does."""
    if cgroups.available() is None:
        tree = cgroups.app_tree(layout, f"smoke-{os.getpid()}")
        tree.make(memory=cgroups.memory_limit(max_rss) if spec else None, tasks=spec.limits.processes if spec else None)
        if join:
            tree.join()


def keep(conn: socket.socket, answer_fd: int, state: str, timeout: float) -> None:
    """In a child of the master (root, running hotplate's code only): fork
    the check, which joins its cgroup and waits; tell the controller its
    pid; hand it the arguments the controller sends once its release is
    assembled; and once it is gone, tell how it ended. It is killed if it
    outlives ``timeout`` from then, or the controller (its connection
    closes): a check never outlives the deploy that asked."""
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        conn.close()  # (the keeper's line: nothing that runs module code may write there)
        os.close(go_w)
        _answer(answer_fd, go_r, state)
    os.close(answer_fd)
    os.close(go_r)
    send(conn, {"pid": pid})
    try:
        request, _ = receive(conn, bytearray())  # (the controller's: it waits for the build)
    except (OSError, ValueError):
        request = None
    finished = False
    with os.fdopen(go_w, "wb") as go:
        if request is not None:
            go.write(json.dumps(request.get("args", [])).encode())
    if request is not None:
        pidfd = os.pidfd_open(pid)
        finished = pidfd in select.select([pidfd, conn], [], [], timeout)[0]
    if not finished:
        os.kill(pid, signal.SIGKILL)  # (cancelled, too slow, or its controller is gone)
    _, status = os.waitpid(pid, 0)
    try:
        send(conn, {"exit": os.waitstatus_to_exitcode(status), "timeout": request is not None and not finished})
    except OSError:
        pass  # (the controller is gone)


def _answer(fd: int, go: int, state: str) -> None:
    """The check itself: in its cgroup at once (the join waits for the
    kernel, while the controller builds), then its arguments from the
    keeper, then its failures written to ``fd`` as JSON, then exit."""
    code = 0
    try:
        if state:
            enclose(Layout(state), None)
        with os.fdopen(go, "rb") as f:
            args = [str(a) for a in json.loads(f.read() or b"[]")]
        if not args:
            return  # (cancelled)
        data = memoryview(json.dumps(check(*args, joined=bool(state))).encode())
        while data:
            data = data[os.write(fd, data):]
    except BaseException:  # (said on the server's log; the controller sees an exit without an answer)
        traceback.print_exc()
        code = 70
    finally:
        os._exit(code)


def main(release_dir: str, workdir: str = "", user: str = "", config_dir: str = "", state: str = "") -> int:
    failures = check(release_dir, workdir, user, config_dir, state)
    print(json.dumps(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
