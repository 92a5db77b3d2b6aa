"""Build and load the C runtime (``libhotplate``) that hosts modules.

The runtime is compiled on first use into a content-addressed cache, so an
install needs no build step and a changed runtime never reuses an old file
(glibc's dlopen would hand back the old code for a reused path).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import os
import subprocess
import tempfile
from pathlib import Path

from .paths import HEADER, HOST_API, INCLUDE_DIR, RUNTIME_DIR

CFLAGS = [
    "-std=gnu11", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra",
    "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2", "-Wl,-z,relro,-z,now",
]
LIBS = ["-ljansson", "-lseccomp", "-lsodium", "-llmdb", "-lhiredis", "-lsqlite3"]
#: The header's constants, by the names Python reads them as: result codes
#: of the runtime's calls (RT_*), what serving a connection in C ends with
#: (CONN_*, hp_rt_serve_conn), WebSocket events (WS_*) and the actions of a
#: WebSocket call's outbox (OUT_*). Read from the C header, so they are
#: defined in one place.
CONSTANTS = ("RT_OK", "RT_HANDLER_ERROR", "RT_CRASHED", "RT_TIMED_OUT", "CONN_IDLE", "CONN_CLOSE", "CONN_PYTHON",
             "WS_OPEN", "WS_MESSAGE", "WS_CLOSE", "OUT_SEND", "OUT_CLOSE", "OUT_SUBSCRIBE", "OUT_UNSUBSCRIBE",
             "OUT_PUBLISH", "OUT_SEND_POSITION", "OUT_RESUME")


@functools.lru_cache(maxsize=1)
def declarations() -> tuple[object, object]:
    """The runtime's declarations as ``(ffi, lib)``, from cffi's out-of-line
    ABI mode: parsed once per content into a Python module in the cache,
    so no process parses C (pycparser: 150 ms and 4 MB in every worker,
    smoke check and job runner) and a process that only builds modules
    (the controller) loads none of it (issue 23)."""
    path = _compiled_declarations(default_cache_dir())
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ffi, module.ffi.dlopen(None)  # any library of this FFI carries the header's constants


def _compiled_declarations(cache_dir: Path) -> Path:
    """``host_api.h`` parsed by cffi into ``runtime/hotplate_ffi_DIGEST.py``, once per content."""
    import _cffi_backend

    digest = hashlib.sha256((HOST_API.read_text() + _cffi_backend.__version__).encode()).hexdigest()[:16]
    target = cache_dir / "runtime" / f"hotplate_ffi_{digest}.py"
    if target.exists():
        return target
    import cffi  # only to make the module: loading it needs only the backend

    target.parent.mkdir(parents=True, exist_ok=True)
    ffi = cffi.FFI()
    ffi.set_source(target.stem, None)
    ffi.cdef(HOST_API.read_text())
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".py.tmp")
    os.close(fd)
    with contextlib.redirect_stdout(io.StringIO()):  # (cffi says "generating ..." on stdout)
        ffi.emit_python_code(tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target


def __getattr__(name: str):
    if name in CONSTANTS:
        return getattr(declarations()[1], ("HP_" if name.startswith("RT_") else "HP_RT_") + name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_cache_dir() -> Path:
    """The per-user cache, unless ``HOTPLATE_CACHE`` names another."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(os.environ.get("HOTPLATE_CACHE") or Path(base) / "hotplate")


EXPORTS = RUNTIME_DIR / "exports.map"


def runtime_sources() -> list[Path]:
    return sorted(RUNTIME_DIR.glob("*.c")) + sorted(RUNTIME_DIR.glob("vendor/*.c")) + \
        sorted(RUNTIME_DIR.glob("*.h")) + sorted(RUNTIME_DIR.glob("vendor/*.h")) + [HEADER, EXPORTS]


def c_sources() -> list[Path]:
    """The runtime's C files, the vendored parser's included (what every build of it compiles)."""
    return [p for p in runtime_sources() if p.suffix == ".c"]


@functools.lru_cache(maxsize=1)
def compiler_version(cc: str = "cc") -> str:
    """The compiler's identity, part of every cache key."""
    out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0]


@functools.lru_cache(maxsize=1)
def sdk_digest() -> str:
    """A digest of the header and runtime: a changed SDK invalidates every build."""
    h = hashlib.sha256()
    for path in runtime_sources():
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def build_runtime(cache_dir: Path | None = None) -> Path:
    """Compile the runtime once per content; return the shared object's path."""
    cache_dir = cache_dir or default_cache_dir()
    digest = hashlib.sha256((sdk_digest() + compiler_version()).encode()).hexdigest()[:16]
    target = cache_dir / "runtime" / f"libhotplate-{digest}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
    os.close(fd)
    sources = [str(p) for p in c_sources()]
    cmd = ["cc", *CFLAGS, f"-Wl,--version-script={EXPORTS}", f"-I{INCLUDE_DIR}", "-o", tmp, *sources, *LIBS]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError(
            "could not build the hotplate runtime (are libjansson-dev, libseccomp-dev, libsodium-dev, liblmdb-dev, libhiredis-dev and libsqlite3-dev installed? scripts/setup installs them):\n"
            + result.stderr
        )
    os.replace(tmp, target)
    return target


@functools.lru_cache(maxsize=1)
def load() -> tuple[object, object]:
    """The runtime as ``(ffi, lib)``; built first if needed."""
    ffi = declarations()[0]
    return ffi, ffi.dlopen(str(build_runtime()))
