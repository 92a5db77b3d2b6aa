"""Build: compile each module into a shared object through a content-addressed cache.

The cache works like ccache's direct mode. A *pre-key* covers what is known
before compiling (source path, flags, libraries, compiler, SDK); under it the
cache remembers the files the last compile read (from gcc's ``-MD`` output)
with their digests. The object's key adds those digests, so an unchanged
module never runs the compiler and a changed header rebuilds exactly the
modules that include it. Paths inside the app are kept relative so that two
checkouts of the same tree share the cache.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hotplate.server.contract.layout import write_atomic
from hotplate.server.paths import INCLUDE_DIR
from hotplate.server.libhotplate import compiler_version, sdk_digest

from . import sandbox
from .errors import BuildError
from .plan import Manifest, Module

CC = os.environ.get("CC", "cc")
#: ``hotplate dev``'s compiler for what it serves (Builder's ``quick``).
TCC = "tcc"
#: Seconds one module's compile may take: hostile or broken C must not hold a deploy.
COMPILE_TIMEOUT_S = float(os.environ.get("HOTPLATE_COMPILE_TIMEOUT", 120))
#: The address space each compile may use (gcc, cc1, ld: each process), in MiB.
COMPILE_MEMORY_MIB = int(os.environ.get("HOTPLATE_COMPILE_MEMORY_MIB", 2048))
#: Strict warnings and hardening on every module; -z defs turns a missing
#: library into a build error instead of a load error in a worker.
BASE_FLAGS = (
    "-std=gnu11", "-O2", "-fPIC", "-shared", "-fvisibility=hidden",
    "-Wall", "-Wextra", "-Wformat=2", "-Wno-unused-parameter",
    "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2",
    "-Wl,-z,relro,-z,now", "-Wl,-z,defs", "-Wl,--as-needed",
)
DEFAULT_LIBS = ("jansson",)


@dataclass(frozen=True)
class ModuleBuild:
    """What building one module produced."""

    name: str
    source: str
    key: str
    ok: bool
    cached: bool
    seconds: float
    diagnostics: str
    object_path: Path | None


@dataclass(frozen=True)
class BuildResult:
    modules: tuple[ModuleBuild, ...]
    seconds: float

    @property
    def compiled(self) -> int:
        return sum(1 for m in self.modules if not m.cached)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=4096)
def _file_digest(path: str, stat_key: tuple) -> str:
    """A file's digest, kept while its inode, size and times stay the
    same (ccache's direct mode trusts the same): the system headers every
    module includes are hashed once per controller, not per module and
    per deploy. A checkout's files are new inodes, so they are read."""
    with open(path, "rb") as f:
        return _digest(f.read())


@functools.lru_cache(maxsize=256)
def _pkg_config(packages: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Compiler and linker flags for pkg-config packages."""
    if not packages:
        return (), ()
    flags = []
    for mode in ("--cflags", "--libs"):
        out = subprocess.run(["pkg-config", mode, *packages], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise BuildError(
                f"pkg-config could not find {' '.join(packages)}: {out.stderr.strip()}; "
                "install the library's -dev package (e.g. apt-get install zlib1g-dev)")
        flags.append(tuple(shlex.split(out.stdout)))
    return flags[0], flags[1]


class Builder:
    """Compiles modules of one app directory, sharing one cache directory.

    :param app_root: the checkout holding ``deploy.yaml`` and the sources.
    :param cache_dir: where objects and dependency records are kept.
    :param extra_flags: added to every module's flags (a sanitizer build).
    :param quick: ``hotplate dev``'s builds, never a release's: tcc (where
        installed) builds the object served, in a few milliseconds, while
        gcc reads the source beside it (``-fsyntax-only``) for the errors
        and warnings the developer sees; what tcc cannot build, gcc does.
    """

    def __init__(self, app_root: Path, cache_dir: Path, jobs: int | None = None, extra_flags: tuple[str, ...] = (),
                 quick: bool = False):
        self.root = Path(app_root).resolve()
        self.cache = Path(cache_dir)
        self.jobs = jobs or os.cpu_count() or 1
        self.extra_flags = extra_flags
        self.quick = quick and shutil.which(TCC) is not None
        for sub in ("objects", "deps"):
            (self.cache / sub).mkdir(parents=True, exist_ok=True)

    def object(self, key: str, kind: str = "so") -> Path:
        """Where the cache keeps a built object (``so``) and its compiler output (``log``)."""
        return self.cache / "objects" / f"{key}.{kind}"

    def build(self, manifest: Manifest, on_result=None, on_compile=None) -> BuildResult:
        """Build every module, in parallel; raise BuildError if any fails.

        :param on_result: called with each :class:`ModuleBuild` as it finishes,
            so progress can be streamed (e.g. to ``git push`` as ``remote:``).
        :param on_compile: called once the compilers run, if any has to:
            what can be done meanwhile (the smoke check forked ahead).
        """
        start = time.monotonic()
        reporting = threading.Lock()  # one module's lines together, whichever compile ends first

        def said(result: ModuleBuild) -> ModuleBuild:
            if on_result:
                with reporting:
                    on_result(result)
            return result

        # The cache first, in this thread (a few hundred microseconds a module); only what it lacks
        # goes to the compile pool, whose threads would only contend for the GIL over lookups.
        found = [self.lookup(m) for m in manifest.modules]
        jobs = [job for job in found if not isinstance(job, ModuleBuild)]
        for result in found:
            if isinstance(result, ModuleBuild):
                said(result)
        built = iter(_pool(self.jobs).map(lambda job: said(self.compile(*job)), jobs))  # (submitted at once)
        if jobs and on_compile:
            on_compile()
        results = tuple(r if isinstance(r, ModuleBuild) else next(built) for r in found)
        failed = [r for r in results if not r.ok]
        if failed:
            names = ", ".join(f"{r.name} ({r.source})" for r in failed)
            raise BuildError(f"{len(failed)} module(s) failed to build: {names}", list(results))
        return BuildResult(results, time.monotonic() - start)

    def command(self, module: Module) -> list[str]:
        """The compiler arguments that define the object, output aside."""
        pc_cflags, pc_libs = _pkg_config(module.pkg_config)
        return [
            *BASE_FLAGS,
            *(f"-I{d}" for d in module.include),
            *pc_cflags,
            *module.cflags,
            *self.extra_flags,
            module.source,
            *pc_libs,
            *(f"-l{lib}" for lib in module.libs + DEFAULT_LIBS),
        ]

    def pre_key(self, module: Module, args: list[str]) -> str:
        ident = {"args": args, "cc": compiler_version(CC), "sdk": sdk_digest(), **({"quick": TCC} if self.quick else {})}
        return _digest(json.dumps(ident, sort_keys=True).encode())

    def file_digest(self, name: str) -> str | None:
        path = self.root / name
        try:
            st = os.stat(path)
            return _file_digest(str(path), (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError:
            return None

    def cached_key(self, pre_key: str) -> str | None:
        """The key of a cached object whose recorded inputs all match the
        files now on disk. One record per object built under this pre-key, so
        going back to an earlier version (a revert) finds its object again."""
        records = sorted((self.cache / "deps" / pre_key).glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        digests: dict[str, str | None] = {}
        for record in records:
            try:
                deps = json.loads(record.read_text())
            except (OSError, ValueError):
                continue
            for name in deps:
                if name not in digests:
                    digests[name] = self.file_digest(name)
            if all(digests[name] == digest for name, digest in deps.items()):
                return self.object_key(pre_key, deps)
        return None

    @staticmethod
    def object_key(pre_key: str, deps: dict[str, str]) -> str:
        return _digest((pre_key + json.dumps(deps, sort_keys=True)).encode())

    def lookup(self, module: Module) -> ModuleBuild | tuple:
        """The module's build if the cache has it (or its flags cannot
        work), else what :meth:`compile` needs."""
        start = time.monotonic()
        try:
            args = self.command(module)
        except BuildError as e:
            return ModuleBuild(module.name, module.source, "", False, False, 0.0, str(e), None)
        pre = self.pre_key(module, args)
        key = self.cached_key(pre)
        if key and self.object(key).exists():
            os.utime(self.object(key))  # recently used: pruned last
            log = self.object(key, "log")
            diagnostics = log.read_text() if log.exists() else ""
            return ModuleBuild(module.name, module.source, key, True, True,
                               time.monotonic() - start, diagnostics, self.object(key))
        return module, args, pre, start

    def compile(self, module: Module, args: list[str], pre: str, start: float, quick: bool | None = None) -> ModuleBuild:
        quick = self.quick if quick is None else quick
        with tempfile.TemporaryDirectory(dir=self.cache) as tmp:
            out, depfile = Path(tmp) / "out.so", Path(tmp) / "out.d"
            made = ["-MD", "-MF", str(depfile), "-o", str(out)]
            cmds = [[CC, f"-I{INCLUDE_DIR}", "-fsyntax-only", *_compile_only(args)],
                    [TCC, f"-I{INCLUDE_DIR}", "-shared", *made, *_tcc_only(args, module.source)]] if quick else \
                [[CC, f"-I{INCLUDE_DIR}", *made, *args]]
            procs = _run_bounded([self.sandboxed(cmd, Path(tmp)) for cmd in cmds], self.root, COMPILE_TIMEOUT_S)
            if None in procs:
                return ModuleBuild(module.name, module.source, "", False, False, time.monotonic() - start,
                                   f"{module.source}: the compiler did not finish within {COMPILE_TIMEOUT_S:g}s "
                                   "(an include that never ends, or a runaway macro?); the build was stopped\n", None)
            for proc in procs:
                if proc.returncode != 0 and "No space left on device" in proc.stderr:
                    said = next(line for line in proc.stderr.splitlines() if "No space left on device" in line)
                    raise OSError(errno.ENOSPC, f"the compiler could not write {module.source}'s object: {said}")
            diagnostics = _with_hints(procs[0].stderr)  # (gcc's: what the developer reads, in dev too)
            if procs[0].returncode != 0:
                return ModuleBuild(module.name, module.source, "", False, False,
                                   time.monotonic() - start, diagnostics, None)
            if procs[-1].returncode != 0:  # (dev: C that gcc takes and tcc does not)
                return self.compile(module, args, pre, start, quick=False)
            deps = {name: self.file_digest(name) or "" for name in self.dependencies(depfile)}
            key = self.object_key(pre, deps)
            target = self.object(key)
            self.object(key, "log").write_text(diagnostics)
            os.replace(out, target)
            (self.cache / "deps" / pre).mkdir(exist_ok=True)
            write_atomic(self.cache / "deps" / pre / f"{key}.json", json.dumps(deps, sort_keys=True))
        return ModuleBuild(module.name, module.source, key, True, False,
                           time.monotonic() - start, diagnostics, target)

    def sandboxed(self, cmd: list[str], tmp: Path) -> list[str]:
        """A compiler command in the build sandbox, its memory and CPU bounded."""
        state = self.cache.resolve().parent  # hidden when it lies inside the app (dev, build, serve)
        cmd = sandbox.wrap(cmd, self.root, [self.root, INCLUDE_DIR],
                           [state] if self.root in state.parents else [], [tmp.resolve()])
        return ["prlimit", f"--as={COMPILE_MEMORY_MIB << 20}", f"--cpu={int(COMPILE_TIMEOUT_S) + 1}", "--", *cmd]

    def dependencies(self, depfile: Path) -> list[str]:
        """Files the compile read, relative to the app root when inside it."""
        text = depfile.read_text().replace("\\\n", " ")
        _, _, deps = text.partition(":")
        names = []
        for dep in shlex.split(deps.replace("\\ ", "\0")):
            path = (self.root / dep.replace("\0", " ")).resolve()
            try:
                names.append(str(path.relative_to(self.root)))
            except ValueError:
                names.append(str(path))
        return sorted(set(names))


def prune_cache(cache_dir: Path, keep: set[str], max_bytes: int) -> int:
    """Drop the least recently used objects until the cache holds at most
    ``max_bytes``, never one whose key is in ``keep`` (the retained releases
    load them). Returns how many were dropped."""
    objects = sorted((p for p in (Path(cache_dir) / "objects").glob("*.so")), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in objects)
    dropped = set()
    for path in objects:
        if total <= max_bytes:
            break
        if path.stem in keep:
            continue
        total -= path.stat().st_size
        path.unlink(missing_ok=True)
        path.with_suffix(".log").unlink(missing_ok=True)
        dropped.add(path.stem)
    for record in (Path(cache_dir) / "deps").glob("*/*.json"):
        if record.stem in dropped:
            record.unlink(missing_ok=True)
    return len(dropped)


def _run_bounded(cmds: list[list[str]], cwd: Path, timeout: float) -> list[subprocess.CompletedProcess | None]:
    """Run compilers side by side; each one's result, or None if it ran
    past ``timeout``: then its whole process group is killed (gcc's own
    children, cc1 and ld, included)."""
    procs = [subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for cmd in cmds]
    deadline = time.monotonic() + timeout
    results: list[subprocess.CompletedProcess | None] = []
    for cmd, proc in zip(cmds, procs):
        try:
            out, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            results.append(None)
            continue
        results.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return results


def _compile_only(args: list[str]) -> list[str]:
    """gcc's arguments without the link: what ``-fsyntax-only`` reads."""
    return [a for a in args if a != "-shared" and not a.startswith(("-Wl,", "-l", "-L"))]


def _tcc_only(args: list[str], source: str) -> list[str]:
    """What tcc takes of gcc's arguments: the source, paths, macros, libraries."""
    return [a for a in args if a == source or a.startswith(("-I", "-D", "-U", "-l", "-L"))]


@functools.lru_cache(maxsize=4)
def _pool(jobs: int) -> ThreadPoolExecutor:
    """One long-lived compile pool per job count, shared by every build of a
    long-running controller, rather than fresh threads for each build."""
    return ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="build")


def _with_hints(stderr: str) -> str:
    """Compiler output verbatim, plus a hint for mistakes specific to hotplate."""
    if "hp__api" in stderr:
        stderr += "hint: add `HP_MODULE;` once after `#include <hotplate.h>`\n"
    if "out of memory allocating" in stderr or "virtual memory exhausted" in stderr:
        stderr += (f"hint: the compile passed its memory bound ({COMPILE_MEMORY_MIB} MiB, "
                   "HOTPLATE_COMPILE_MEMORY_MIB); a huge initializer or macro expansion?\n")
    if any("undefined reference to" in line and "hp__api" not in line for line in stderr.splitlines()):
        stderr += "hint: name the library that defines it under the module's `libs:` or `pkg-config:` in deploy.yaml\n"
    return stderr

