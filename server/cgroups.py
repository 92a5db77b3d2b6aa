"""Process trees that die whole, and memory the kernel bounds: cgroups.

Every process that runs module code (a worker, the smoke check, the job
runner with its jobs) joins a cgroup of its own, ``hotplate/<app>/<name>``
under the cgroup the controller was started in, before it loads anything.
Whatever module code forks stays in it, however it detaches (a double
fork, ``setsid``), so ending the tree ends all of it (:meth:`Tree.kill`);
and the kernel holds its memory and its number of tasks to the limits
while it runs, not after.

Three jobs, each done by the first hierarchy that can: killing (cgroup v2's
``cgroup.kill``, else v1's ``pids``), memory (v2's ``memory.max`` where the
controller is delegated, else v1's ``memory``) and tasks (``pids.max``,
likewise). Where none is writable (no cgroup file system, an unprivileged
controller), :func:`available` says why and the callers fall back: an
address-space limit for memory, and no tree to kill.
"""
from __future__ import annotations

import functools
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from .contract.layout import Layout

log = logging.getLogger("hotplate")
MOUNTS = Path("/proc/self/mounts")


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and this process's cgroup in it."""

    mount: Path
    version: int
    controllers: frozenset[str]
    own: str

    def base(self) -> Path:
        return self.mount / self.own.lstrip("/") / "hotplate"


@functools.lru_cache(maxsize=1)
def _hierarchies() -> tuple[Hierarchy, ...]:
    """The writable hierarchies, read once per process (before it joins a tree)."""
    own = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            own[names] = path
    except (OSError, ValueError):
        return ()
    found = []
    try:
        mounts = MOUNTS.read_text().splitlines()
    except OSError:
        return ()
    for line in mounts:
        fields = line.split()
        if len(fields) < 4 or fields[2] not in ("cgroup", "cgroup2"):
            continue
        mount = Path(fields[1])
        if fields[2] == "cgroup2":
            path = own.get("")
            try:
                controllers = (mount / path.lstrip("/") / "cgroup.subtree_control").read_text().split() if path \
                    is not None else []
            except OSError:
                controllers = []
            version = 2
        else:
            kinds = [o for o in fields[3].split(",") if o in ("memory", "pids", "freezer")]
            path = next((p for names, p in own.items() if set(kinds) & set(names.split(","))), None)
            controllers, version = kinds, 1
        if path is not None and os.access(mount / path.lstrip("/"), os.W_OK):
            found.append(Hierarchy(mount, version, frozenset(controllers), path))
    return tuple(found)


def _pick(job: str) -> Hierarchy | None:
    """The hierarchy that does ``job`` (kill, memory, pids), v2 first."""
    hs = sorted(_hierarchies(), key=lambda h: -h.version)
    if job == "kill":
        return next((h for h in hs if h.version == 2 or "pids" in h.controllers), None)
    return next((h for h in hs if job in h.controllers), None)


def available() -> str | None:
    """None when trees can be made and killed here, else why not."""
    if os.geteuid() != 0:
        return "hotplate does not run as root"
    return None if _pick("kill") else "no writable cgroup hierarchy (cgroup v2, or v1's pids)"


class Tree:
    """One cgroup, ``hotplate/<parts...>``, in each hierarchy that has a job for it.

    :param parts: the app's tag, then the tree's name (:func:`app_tree`).
    """

    def __init__(self, *parts: str):
        self.parts = parts

    def places(self) -> dict[str, Path]:
        """Where each job is done, by job: kill, memory, pids."""
        out = {}
        for job in ("kill", "memory", "pids"):
            h = _pick(job)
            if h is not None:
                out[job] = h.base().joinpath(*self.parts)
        return out

    def make(self, memory: int | None = None, tasks: int | None = None) -> bool:
        """Create the cgroups and set the limits given; False where none can be made."""
        places = self.places()
        if available() is not None:
            return False
        for path in set(places.values()):
            path.mkdir(parents=True, exist_ok=True)
        if memory and "memory" in places:
            v2 = (places["memory"] / "memory.max").exists()
            _write(places["memory"] / ("memory.max" if v2 else "memory.limit_in_bytes"), str(memory))
            if not v2 and (places["memory"] / "memory.memsw.limit_in_bytes").exists():
                _write(places["memory"] / "memory.swappiness", "0", quiet=True)
        if tasks and "pids" in places:
            _write(places["pids"] / "pids.max", str(tasks))
        return True

    def join(self, pid: int = 0) -> None:
        """Move ``pid`` (0: this process) into the tree, in every hierarchy."""
        for path in set(self.places().values()):
            _write(path / "cgroup.procs", str(pid or os.getpid()))

    def pids(self) -> list[int]:
        path = self.places().get("kill")
        try:
            return [int(p) for p in (path / "cgroup.procs").read_text().split()] if path else []
        except (OSError, ValueError):
            return []

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the tree, forks in progress included, and
        wait until it is empty; then remove it (and any tree under it)."""
        path = self.places().get("kill")
        if path is None or not path.is_dir():
            return
        for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            Tree(*self.parts, *sub.relative_to(path).parts).kill(timeout)
        deadline = time.monotonic() + timeout
        if (path / "cgroup.kill").exists():
            _write(path / "cgroup.kill", "1", quiet=True)
        elif (path / "pids.max").exists():
            _write(path / "pids.max", "0", quiet=True)  # v1: no new task while we kill the rest
        while (left := self.pids()) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        if left:
            log.error("cgroup %s: %d process(es) still there after SIGKILL", path, len(left))
        self.remove()

    def remove(self) -> None:
        """Remove the (empty) cgroups; logged, not raised, if something is still in one."""
        for path in set(self.places().values()):
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot remove cgroup %s: %s", path, e)

    def children(self) -> list[str]:
        """The names of the trees directly under this one."""
        path = self.places().get("kill")
        try:
            return sorted(p.name for p in path.iterdir() if p.is_dir()) if path else []
        except OSError:
            return []

    def oom_kills(self) -> int:
        """How many of the tree's processes the kernel killed for its memory limit."""
        path = self.places().get("memory")
        for name in ("memory.events", "memory.oom_control"):
            try:
                for line in (path / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
            except (OSError, ValueError, TypeError):
                continue
        return 0


def _write(path: Path, text: str, quiet: bool = False) -> None:
    try:
        path.write_text(text)
    except OSError as e:
        if not quiet:
            raise OSError(f"cannot write {text!r} to {path}: {e.strerror}") from None


def memory_limit(max_rss: int) -> int:
    """The kernel's hard limit for a worker whose soft ceiling is ``max_rss``:
    the worker is replaced gracefully past ``max_rss`` (between requests);
    a single call that runs far past it is stopped here, mid-call."""
    return max_rss + max(max_rss // 2, 64 << 20)


def app_tree(layout: Layout, *name: str) -> Tree:
    """The tree of one app (one state directory: server/contract/layout.py), or one under it."""
    return Tree(layout.tag, *name)
