"""Release: assemble an immutable release directory from a build, smoke-check it.

A release is ``releases/<id>/`` holding ``release.json`` (what the server
loads), ``build.json`` (the build record), the manifest and the module
objects. It is made in a staging directory and renamed into place only once
the smoke check passed, so a release either exists whole or not at all.
Its id is a digest of its content: building the same tree twice (a revert)
yields the same release.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hotplate.server import cgroups
from hotplate.server.contract.control import Keeper, Master, Unreachable
from hotplate.server.contract.layout import Layout
from hotplate.server.contract.release import ModuleSpec, ReleaseSpec

from .build import BuildResult
from .errors import SmokeCheckError
from .plan import MANIFEST, Manifest

SMOKE_TIMEOUT_S = float(os.environ.get("HOTPLATE_SMOKE_TIMEOUT", 60))
HANGS = f"smoke check did not finish in {SMOKE_TIMEOUT_S:g}s: a module's hp_init or constructor hangs"
#: Seconds past the check's own timeout before the controller stops waiting for its keeper.
KEEPER_GRACE_S = 5.0
log = logging.getLogger("hotplate.controller")


@dataclass(frozen=True)
class Check:
    """How a smoke check runs module code: as the workers do.

    :param worker_user: the account (None: this process's own).
    :param env: the environment of a sanitizer build (a fresh interpreter).
    :param state: the server's state directory: where the release's config
        set is rendered, and the name of the check's cgroup.
    """

    worker_user: str | None = None
    env: dict | None = None
    state: Layout | None = None


@dataclass(frozen=True)
class Release:
    id: str
    path: Path
    reused: bool


def describe(manifest: Manifest, build: BuildResult, config: str | None = None) -> ReleaseSpec:
    """The server's view of a release: modules, objects, routes and the
    digest of its config set. Its id is a digest of that content, so the same
    tree built again with the same config is the same release."""
    keys = {b.name: b.key for b in build.modules}
    modules = tuple(ModuleSpec(m.name, m.source, keys[m.name], f"modules/{m.name}-{keys[m.name][:16]}.so", m.config,
                               m.health, m.routes, m.websockets, m.unconfined) for m in manifest.modules)
    spec = ReleaseSpec("", manifest.app, modules, manifest.limits, config)
    body = {k: v for k, v in spec.to_json().items() if k not in ("id", "format")}
    release_id = "r" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    return replace(spec, id=release_id)


def assemble(app_root: Path, manifest: Manifest, build: BuildResult, releases_dir: Path,
             meta: dict | None = None, config: str | None = None, check: Check = Check(),
             forked: Forked | None = None) -> Release:
    """Create (or reuse) the release for this build and return it.

    :param meta: extra facts for ``build.json`` (commit, trigger...).
    :param config: the digest of the release's config set, rendered in
        ``check.config_dir`` for the smoke check.
    :param check: how the smoke check runs.
    :param forked: the smoke check forked ahead for this release, if any.
    :raises SmokeCheckError: when a module fails to load or init.
    """
    spec = describe(manifest, build, config)
    releases_dir.mkdir(parents=True, exist_ok=True)
    final = releases_dir / spec.id
    if (final / "release.json").exists():
        return Release(spec.id, final, True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=releases_dir))
    try:
        _fill(staging, Path(app_root), spec, build, meta or {})
        smoke_check(staging, check, forked)
        os.rename(staging, final)
    except FileExistsError:
        # Another build of the same content won the race: same bytes, use it.
        shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Release(spec.id, final, False)


def _fill(staging: Path, app_root: Path, spec: ReleaseSpec, build: BuildResult, meta: dict) -> None:
    (staging / "modules").mkdir()
    objects = {b.name: b for b in build.modules}
    for mod in spec.modules:
        _link_or_copy(objects[mod.name].object_path, staging / mod.object)
    shutil.copy2(app_root / MANIFEST, staging / MANIFEST)
    record = {
        **meta, "release": spec.id, "built_at": time.time(), "seconds": build.seconds,
        "modules": [{k: v for k, v in asdict(b).items() if k != "object_path"} for b in build.modules],
    }
    (staging / "build.json").write_text(json.dumps(record, indent=2))
    (staging / "release.json").write_text(json.dumps(spec.to_json(), indent=2))
    for path in (staging, staging / "modules", *staging.rglob("*")):  # readable by the workers' account
        path.chmod(0o755 if path.is_dir() or path.suffix == ".so" else 0o644)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link the cached object (same content, so sharing its inode is safe)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def smoke_check(release_dir: Path, check: Check = Check(), forked: Forked | None = None) -> None:
    """Load the release in a throwaway process; raise with every failure found.

    It runs module code as the workers do (:class:`Check`): as their
    account, confined the same way, in a cgroup of its own (ended
    afterwards with whatever it forked), with the release's config set, in
    a directory of its own laid out as the workers' (``STATE/data``'s
    directories, none of its files: what hp_init writes there is thrown
    away, and a relative path that opens in the workers opens here).
    ``forked``: the check forked ahead for it, if any (it is used up)."""
    if forked is None and check.env is None and check.state is not None:
        forked = Forked(check.state)
    scratch = Path(tempfile.mkdtemp(prefix=".smoke-", dir=Path(release_dir).parent))
    account = pwd.getpwnam(check.worker_user) if check.worker_user else None
    if check.state is not None:
        _empty_copy(check.state.data, scratch, account)
    if account:
        os.chown(scratch, account.pw_uid, account.pw_gid)
    try:
        args = [str(release_dir), str(scratch), check.worker_user or "",
                str(check.state.config_render) if check.state else "", str(check.state.root) if check.state else ""]
        failures = forked.run(args) if forked is not None else None
        if failures is None:
            failures = _fresh_check(args, check.env or {}, check.state)
    finally:
        if forked is not None:
            forked.close()
        shutil.rmtree(scratch, ignore_errors=True)
    if failures:
        lines = [f"  module {f['module']} ({f['source']}): {f['error']}" for f in failures]
        raise SmokeCheckError("smoke check failed; the release was not made:\n" + "\n".join(lines))


#: At most this many of the workers' directories are laid out for a smoke check,
LAYOUT_DIRS = 256
#: ... found among at most this many entries (files included) of theirs.
LAYOUT_ENTRIES = 10_000


def _empty_copy(data: Path, scratch: Path, account) -> None:
    """Make ``data``'s directories (not its files) under ``scratch``. The
    workers can write ``data``, so it is walked by descriptor, each
    directory opened O_NOFOLLOW under its parent (never through a link), and
    only so far: a module cannot slow a deploy down with a million files or
    directories there."""
    left, made = LAYOUT_ENTRIES, 0

    def walk(fd: int, rel: Path) -> bool:
        nonlocal left, made
        subdirs = []
        with os.scandir(fd) as entries:
            for entry in entries:
                left -= 1
                if left < 0:
                    return False
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.name)
        subdirs = subdirs[:LAYOUT_DIRS - made]
        for name in subdirs:  # this level whole first: a crowded sibling cannot starve it
            target = scratch / rel / name
            target.mkdir(mode=0o700)
            if account:
                os.lchown(target, account.pw_uid, account.pw_gid)
            made += 1
        for name in subdirs:
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            try:
                if not walk(child, rel / name):
                    return False
            finally:
                os.close(child)
        return True

    try:
        top = os.open(data, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            walk(top, Path())
        finally:
            os.close(top)
    except OSError as e:  # (a directory gone or swapped for a link meanwhile): the check runs in what was made
        log.warning("smoke check: could not lay out the workers' directories (%s)", e)


class Forked:
    """A smoke check forked from the gunicorn master ahead of its release
    (server/smoke.py's keeper), which has the runtime loaded already: a
    check costs a fork, not a Python start, and the fork and the join of
    its cgroup (the kernel waits a grace period there, ~10 ms) happen
    while the build still compiles. :meth:`run` it once the release is
    assembled, else :meth:`close` it. Of no use when no master runs
    (:meth:`run` then answers None)."""

    def __init__(self, state: Layout):
        self.state = state
        self.answer_r, answer_w = os.pipe()
        try:
            self.keeper: Keeper | None = Master(state.master_socket).check(state.root, answer_w, SMOKE_TIMEOUT_S)
        except Unreachable:
            self.keeper = None
        finally:
            os.close(answer_w)

    def run(self, args: list[str]) -> list[dict] | None:
        """The failures the check found in the release ``args`` name."""
        if self.keeper is None:
            self.close()
            return None
        answer = bytearray()
        try:
            self.keeper.go(args)
            ended = _collect(self.keeper, self.answer_r, answer)
        except OSError as e:
            raise SmokeCheckError(f"lost the smoke check's keeper: {e}") from None
        finally:
            self.close()
        if ended is None:
            raise SmokeCheckError("the smoke check's keeper (a child of the gunicorn master) died; see the server log")
        if ended.get("timeout"):
            raise SmokeCheckError(HANGS)
        if len(answer) > ANSWER_LIMIT:
            raise SmokeCheckError(f"{UNREADABLE} (more than {ANSWER_LIMIT} bytes)")
        if not answer:
            raise SmokeCheckError(_died(ended.get("exit")))
        return read_failures(bytes(answer))

    def close(self) -> None:
        """End it, run or not: its keeper kills a check that did not go."""
        if self.answer_r is not None:
            os.close(self.answer_r)
            self.answer_r = None
        if self.keeper is not None:
            self.keeper.sock.close()
            _end(self.state, self.keeper.pid)
            self.keeper = None


def _collect(keeper: Keeper, answer_fd: int, answer: bytearray) -> dict | None:
    """Read the check's answer (at most the limit, and one byte more) until
    its keeper says how it ended; that message (None if the keeper died).
    Module code ran in the writer: the bytes are data, read as they come
    so that a long answer never blocks it."""
    deadline = time.monotonic() + SMOKE_TIMEOUT_S + KEEPER_GRACE_S
    readable = [keeper.sock, answer_fd]
    while (left := deadline - time.monotonic()) > 0:
        for ready in select.select(readable, [], [], left)[0]:
            if ready is keeper.sock:
                ended = keeper.next()
                os.set_blocking(answer_fd, False)
                _read_into(answer_fd, answer)  # (what the check wrote last)
                return ended
            if not _read_into(answer_fd, answer):
                readable.remove(answer_fd)  # the check closed it (or said too much): wait for its end
    return {"timeout": True}


def _read_into(fd: int, answer: bytearray) -> bool:
    """Whether ``fd`` may have more: False at its end or past the limit."""
    while len(answer) <= ANSWER_LIMIT:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        answer += data
        if os.get_blocking(fd):
            return True
    return False


def _end(state: Layout | None, pid: int | None) -> None:
    """End a check's cgroup: whatever hp_init forked, or a check that hangs."""
    if state is not None and pid is not None:
        cgroups.app_tree(state, f"smoke-{pid}").kill()


def _fresh_check(args: list[str], env: dict, state: Layout | None) -> list[dict]:
    """Check in a new interpreter with ``env``: no master runs (``hotplate
    build``, a master restarting), or a sanitizer build, whose runtime
    must be loaded before anything else."""
    cmd = [sys.executable, "-m", "hotplate.server.smoke", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env})
    try:
        out, err = proc.communicate(timeout=SMOKE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SmokeCheckError(HANGS) from None
    finally:
        _end(state, proc.pid)
    if proc.returncode not in (0, 1):  # (1: failures found and said)
        raise SmokeCheckError(_died(proc.returncode) + ":\n" + err[-4000:].decode(errors="replace"))
    lines = out[-ANSWER_LIMIT:].splitlines()  # (what hp_init printed comes before the answer)
    return read_failures(lines[-1] if lines else b"")


#: The most bytes a smoke check's answer may be: its failures, each error
#: cut to a few KB by the loader.
ANSWER_LIMIT = 1 << 20
UNREADABLE = ("the smoke check's answer is not a list of failures: module code in the check's process (a "
              "constructor or hp_init) wrote where it answers (its pipe, or its standard output)")


def read_failures(raw: bytes) -> list[dict]:
    """The failures a smoke check sent, as data: a JSON list of
    ``{"module", "source", "error"}`` strings, or SmokeCheckError."""
    try:
        failures = json.loads(raw)
    except ValueError:
        raise SmokeCheckError(UNREADABLE) from None
    fields = ("module", "source", "error")
    if not isinstance(failures, list) or not all(
            isinstance(f, dict) and all(isinstance(f.get(k), str) for k in fields) for f in failures):
        raise SmokeCheckError(UNREADABLE)
    return [{k: f[k] for k in fields} for f in failures]


def _died(code: int | None) -> str:
    cause = signal.Signals(-code).name if code and code < 0 else f"exit {code}"
    return f"smoke check process died ({cause}) while loading modules"
