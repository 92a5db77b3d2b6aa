"""Load a release's modules into this process: the worker side of a release.

Nothing here may raise out of :meth:`ModuleSet.load`: gunicorn halts the whole
server when a worker fails to boot, so a module that cannot load becomes a
:class:`ModuleState` with an error, and its routes answer 503.
"""
from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import libhotplate
from .contract import release as contract

log = logging.getLogger("hotplate")
LEVELS = {10: logging.DEBUG, 20: logging.INFO, 30: logging.WARNING, 40: logging.ERROR}
HOOK_TIMEOUT_MS = 10_000
#: Lines of a module's own log kept with the error of an hp_init that fails.
INIT_LOG_LINES = 10
_log_callback: Any = None
#: While a module's hp_init runs: its name and the lines it logs (they go
#: with its error to the push, the deploy's log and status, not only to a log).
_init_log: tuple[str, list[str]] | None = None


def setup_process() -> None:
    """Install the runtime's signal handlers and log sink in this process.

    Only in processes that run module code: gunicorn workers and the smoke check.
    """
    global _log_callback
    if _log_callback is not None:
        return
    ffi, lib = libhotplate.load()

    def sink(level, module, route, request_id, message):
        tags = f"module={ffi.string(module).decode(errors='replace')}"
        if route != ffi.NULL and ffi.string(route):
            tags += f" route={ffi.string(route).decode(errors='replace')} req={ffi.string(request_id).decode(errors='replace')}"
        text = ffi.string(message).decode(errors="replace")
        log.log(LEVELS.get(level, logging.INFO), "[%s] %s", tags, text)
        if _init_log is not None and _init_log[0] == ffi.string(module).decode(errors="replace"):
            del _init_log[1][:-INIT_LOG_LINES + 1]
            _init_log[1].append(text)

    _log_callback = ffi.callback("hp_rt_log_fn", sink)
    if lib.hp_rt_setup(_log_callback) != 0:
        raise OSError("hp_rt_setup failed to install signal handlers")


def open_store(url: str) -> None:
    """Open the shared key-value store behind hp_kv_* in this process (after
    :func:`setup_process`). A store that cannot open is logged, not raised:
    the modules still serve, and their hp_kv_* calls say why they fail."""
    _open(lambda lib, err: lib.hp_rt_store_open(url.encode(), err, len(err)))


def open_jobs(db: Path, release: str) -> None:
    """Open the jobs database behind hp_job_* (jobs queued here run on
    ``release``); logged, not raised, as for the store."""
    _open(lambda lib, err: lib.hp_rt_jobs_open(str(db).encode(), release.encode(), err, len(err)))


def _open(call) -> None:
    ffi, lib = libhotplate.load()
    err = ffi.new("char[512]")
    if call(lib, err) != 0:
        log.error("%s", ffi.string(err).decode(errors="replace"))


def load_config(spec: contract.ReleaseSpec, config_dir: str | None) -> None:
    """Give hp_config() the release's config set, before any module loads.

    :raises OSError: if the release has a set and it is not rendered in
        ``config_dir`` (the controller renders it before starting workers).
    """
    if spec.config is None:
        return
    path = Path(config_dir or ".") / f"{spec.config}.json"
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise OSError(f"config set {spec.config} of release {spec.id} is not readable at {path}: {e}") from None
    blob = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in sorted(values.items()))
    _, lib = libhotplate.load()
    if lib.hp_rt_config_set(blob, len(blob), len(values)) != 0:
        raise MemoryError("out of memory for the config set")


@dataclass
class Route:
    """A release's route bound to its loaded handler (or to its module's error)."""

    spec: contract.Route
    module: "ModuleState"
    address: Any = None


@dataclass
class Socket:
    """A release's WebSocket route bound to its loaded handlers."""

    spec: contract.Socket
    module: "ModuleState"
    #: handler addresses by event name: "open", "message", "close" (None: not exported/optional)
    handlers: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModuleState:
    """One module in this worker: loaded and initialised, or failed with a cause."""

    name: str
    source: str
    object: str
    handle: Any = None
    error: str | None = None
    health: str | None = None
    routes: list[Route] = field(default_factory=list)
    sockets: list[Socket] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ModuleSet:
    """Every module of one release, as loaded in this process."""

    spec: contract.ReleaseSpec
    release_dir: Path
    modules: list[ModuleState]

    @property
    def release_id(self) -> str:
        return self.spec.id

    @property
    def routes(self) -> list[Route]:
        return [r for m in self.modules for r in m.routes]

    @property
    def sockets(self) -> list[Socket]:
        return [s for m in self.modules for s in m.sockets]

    @classmethod
    def load(cls, release_dir: Path, run_init: bool = True) -> "ModuleSet":
        """Load, bind and (optionally) init every module of the release."""
        release_dir = Path(release_dir).resolve()
        spec = contract.ReleaseSpec.load(release_dir)
        return cls(spec, release_dir, [_load_module(release_dir, m, run_init) for m in spec.modules])

    def close(self) -> None:
        """Run every loaded module's hp_fini (worker exit)."""
        ffi, lib = libhotplate.load()
        err = ffi.new("char[]", 512)
        for mod in self.modules:
            if mod.handle is not None and mod.ok:
                if lib.hp_rt_module_fini(mod.handle, HOOK_TIMEOUT_MS, err, 512) != 0:
                    log.error("[module=%s] %s", mod.name, ffi.string(err).decode(errors="replace"))


def _load_module(release_dir: Path, spec: contract.ModuleSpec, run_init: bool) -> ModuleState:
    mod = ModuleState(spec.name, spec.source, spec.object, health=spec.health)
    mod.routes = [Route(r, mod) for r in spec.routes]
    mod.sockets = [Socket(w, mod) for w in spec.websockets]
    try:
        mod.error = _bind(release_dir, spec, mod, run_init)
    except Exception as e:  # a worker must boot whatever a module does
        mod.error = f"{type(e).__name__}: {e}"
    if mod.error:
        log.error("[module=%s] cannot serve %s: %s", mod.name, mod.source, mod.error)
    return mod


def _bind(release_dir: Path, spec: contract.ModuleSpec, mod: ModuleState, run_init: bool) -> str | None:
    """Load the object and resolve handlers; return an error text or None."""
    ffi, lib = libhotplate.load()
    err = ffi.new("char[]", 1024)
    config = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in spec.config)
    handle = lib.hp_rt_module_load(str(release_dir / spec.object).encode(), mod.name.encode(),
                                   config, len(config), len(spec.config), err, 1024)
    if handle == ffi.NULL:
        return ffi.string(err).decode(errors="replace")
    mod.handle = handle
    missing = {}  # handler -> the manifest's line naming it (0: unknown)
    for route in mod.routes:
        route.address = lib.hp_rt_module_sym(handle, route.spec.handler.encode())
        if route.address == ffi.NULL:
            missing.setdefault(route.spec.handler, route.spec.line)
    for sock in mod.sockets:
        for event, symbol in sock.spec.symbols.items():
            sock.handlers[event] = symbol and lib.hp_rt_module_sym(handle, symbol.encode())
            if symbol and sock.handlers[event] == ffi.NULL:
                missing.setdefault(symbol, 0)
    if missing:
        exported = exported_functions(release_dir / spec.object)
        said = []
        for name, line in sorted(missing.items()):
            close = difflib.get_close_matches(name, exported, n=1)
            said.append((f"deploy.yaml:{line}: " if line else "") + name +
                        (f" (did you mean {close[0]}?)" if close else ""))
        return (f"handler(s) {', '.join(said)} not exported by {mod.source}; "
                "mark each with HP_EXPORT, with the signature hotplate.h gives for it")
    if run_init:
        return _init(lib, handle, mod.name, err)
    return None


def _init(lib, handle, name: str, err) -> str | None:
    """Run the module's hp_init; on failure, the error with the last lines it logged."""
    global _init_log
    ffi, _ = libhotplate.load()
    _init_log = (name, [])
    try:
        if lib.hp_rt_module_init(handle, HOOK_TIMEOUT_MS, err, 1024) == 0:
            return None
        lines = _init_log[1]
    finally:
        _init_log = None
    error = ffi.string(err).decode(errors="replace")
    if not lines:
        return error.replace("; see the module's log lines", "; it logged nothing (say why with hp_log)")
    return error + ", which said:" + "".join(f"\n    | {line}" for line in lines)


def exported_functions(path: Path) -> list[str]:
    """The functions a module's object exports (its ELF .dynsym, read with
    pyelftools), for "did you mean": read in the process that loads it (a
    worker or the smoke check, never root), only when a handler is missing;
    a malformed object gives none."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        with open(path, "rb") as f:
            table = ELFFile(f).get_section_by_name(".dynsym")
            return [sym.name for sym in (table.iter_symbols() if table is not None else ())
                    if sym["st_shndx"] != "SHN_UNDEF" and sym["st_info"]["type"] == "STT_FUNC"
                    and sym["st_info"]["bind"] == "STB_GLOBAL" and not sym.name.startswith(("hp_module_", "_"))]
    except (OSError, ELFError, ValueError, KeyError):
        return []
