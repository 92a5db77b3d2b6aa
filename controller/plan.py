"""Plan: read and validate ``deploy.yaml`` before anything builds.

Pure: a manifest text and an app directory in, a :class:`Manifest` out, or a
:class:`~controller.errors.ManifestError` listing every problem with its line
and key and what to do about it.
"""
from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from werkzeug.routing import Map, Rule

from hotplate.server.config import RESERVED_PREFIX
from hotplate.server.contract.release import Limits, Route, Socket

from .errors import ManifestError

MANIFEST = "deploy.yaml"
DEFAULT_TIMEOUT_MS = 30_000
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

TOP_KEYS = {"app", "timeout", "modules", "limits"}
#: Per-worker bounds: a worker is replaced after this many requests (with
#: up to 10% jitter) or once its memory passes this size; the process's
#: address space, open files and processes (threads count) are capped.
LIMIT_KEYS = {"max_requests", "max_rss", "address_space", "open_files", "processes", "job_timeout", "job_memory"}
MODULE_KEYS = {"source", "routes", "websockets", "cflags", "include", "libs", "pkg-config", "config", "timeout",
               "health", "unconfined"}
ROUTE_KEYS = {"path", "handler", "methods", "timeout"}
SOCKET_KEYS = {"path", "on_open", "on_message", "on_close", "subprotocols", "timeout", "max_message"}
DEFAULT_MAX_MESSAGE = 1024 * 1024
#: A worker's WebSocket handlers share one event loop: a slow one holds up the others, so the default is short.
SOCKET_TIMEOUT_MS = 5_000
SIZE_RE = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB)?$")
SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024 * 1024, "GiB": 1024 ** 3}

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
SYMBOL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LIB_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
TIMEOUT_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s)?$")
PARAM_RE = re.compile(r"<(?:([a-zA-Z_]+)(?:\([^)]*\))?:)?[^>]*>")
#: A parameter as the request core's one route table compiles it
#: (compile_pattern in server/runtime/serve.c): a whole segment, a string
#: (the default), an int, or a path as the last segment. tests/test_plan.py
#: feeds both the same patterns, so the two cannot drift.
SERVED_PARAM_RE = re.compile(r"<(?:(string|int|path):)?[A-Za-z_][A-Za-z0-9_]*>")


def unserved(pattern: str) -> str | None:
    """Why the request core's route table cannot serve a pattern werkzeug
    reads, or None."""
    segments = pattern[1:].split("/")
    if len(segments) > 32:
        return "more than 32 segments"
    for i, segment in enumerate(segments):
        if "<" not in segment and ">" not in segment:
            continue
        match = SERVED_PARAM_RE.fullmatch(segment)
        if match is None:
            return (f"{segment!r}: a parameter is a whole segment, written <name>, <int:name> or "
                    "<path:name> (other converters and arguments are not served)")
        if match.group(1) == "path" and i != len(segments) - 1:
            return f"{segment!r}: <path:...> only as the last segment"
    return None


@dataclass(frozen=True)
class Module:
    """One C source file, how to compile it, and the routes it serves."""

    name: str
    source: str
    routes: tuple[Route, ...]
    cflags: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    libs: tuple[str, ...] = ()
    pkg_config: tuple[str, ...] = ()
    config: tuple[tuple[str, str], ...] = ()
    health: str | None = None
    line: int = 0
    websockets: tuple[Socket, ...] = ()
    unconfined: str | None = None


@dataclass(frozen=True)
class Manifest:
    """A validated ``deploy.yaml``."""

    app: str
    modules: tuple[Module, ...]
    limits: Limits = Limits()

    def module(self, name: str) -> Module:
        return next(m for m in self.modules if m.name == name)


def _size(n: int) -> str:
    unit = next(u for u in ("GiB", "MiB", "KiB", "B") if n % SIZE_UNITS[u] == 0)
    return f"{n // SIZE_UNITS[unit]}{unit}"


ALLOWED_CFLAGS = ("-O*, -D*, -U*, -W* (not -Wl, -Wa, -Wp), -f* (not plugins, profiles, dumps), -std=, -g*, -m*, "
                  "-pedantic*, -ansi, -pthread, -include/-imacros of a file inside the app")
#: Flags a module may pass, as patterns; everything else is refused.
_CFLAG_OK = re.compile(r"^-(O[0-3sgz]?|Ofast|[DU][A-Za-z_][A-Za-z0-9_]*(=.*)?|W(?![lap],)[A-Za-z0-9_=+,.-]+|"
                       r"f[a-z0-9][a-z0-9_=+,.-]*|std=[a-z0-9+]+|g[a-z0-9]*|m[a-z0-9][a-z0-9_=+,.-]*|"
                       r"pedantic(-errors)?|ansi|pthread)$")
#: -f options that load code or read or write files of their choosing.
_CFLAG_FILES = ("-fplugin", "-fprofile", "-fauto-profile", "-fdump", "-fsave-optimization-record", "-fself-test",
                "-fcallgraph-info", "-fopt-info", "-fstack-usage", "-fcoverage", "-fdebug-prefix",
                "-ffile-prefix", "-fmacro-prefix")


def refused_cflag(flag: str) -> str | None:
    """Why a compiler flag is refused, or None if a module may use it."""
    if flag.startswith("@"):
        return "it reads more flags from a file"
    if flag.startswith(("-Wl,", "-Wa,", "-Wp,", "-Xlinker", "-Xassembler", "-Xpreprocessor", "-fcompare-debug")):
        return ("it passes options on to the linker, assembler, preprocessor or a second compilation; name "
                "libraries under `libs:`")
    if flag.startswith(("-I", "-isystem", "-iquote", "-idirafter", "-iprefix", "-iwithprefix", "--sysroot", "-L")):
        return "it names a directory; list include directories inside the app under `include:`"
    if flag.startswith(_CFLAG_FILES):
        return "it loads a plugin or reads or writes files of its own"
    if flag.startswith(("-wrapper", "-B", "-specs", "--specs", "-o", "-x", "-save-temps", "-print", "-dump")):
        return "it changes which programs or files the compiler uses"
    if not _CFLAG_OK.match(flag):
        return "not one of the flags modules may set"
    return None


#: The most YAML nodes a manifest or config.yaml may have: far beyond any
#: app's, and a bound on what a hostile document can make root build.
MAX_NODES = 100_000


#: libyaml's parser where PyYAML was built with it: ten times the pure one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NODES = (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)


def _strict(text: str) -> None:
    """Refuse aliases (``*name``) and more than :data:`MAX_NODES` nodes,
    from the parser's events, before anything is composed: a few hundred
    bytes of nested aliases would otherwise build millions of nodes as
    root (billion laughs). Raised with the line."""
    nodes = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed; write the value out",
                                              event.start_mark)
        if isinstance(event, _NODES):
            nodes += 1
            if nodes > MAX_NODES:
                raise yaml.composer.ComposerError(None, None, f"more than {MAX_NODES} nodes", event.start_mark)


def safe_load(text: str):
    """``yaml.safe_load``, refusing what :func:`_strict` refuses."""
    _strict(text)
    return yaml.load(text, Loader=_LOADER)


class _Located:
    """YAML data paired with the line of every key, for error messages."""

    def __init__(self, filename: str):
        self.filename = filename
        self.lines: dict[str, int] = {}
        self.problems: list[str] = []
        self.scalars = yaml.SafeLoader("")  # resolves ints, floats, bools like safe_load

    def error(self, where: str, message: str) -> None:
        """Record a problem at the line of ``where``, or of its nearest parent
        when the key is missing."""
        parent = where
        while parent not in self.lines and parent:
            parent = re.sub(r"(^|\.)[^.\[]*$|\[\d+\]$", "", parent)
        line = self.lines.get(parent, 1)
        self.problems.append(f"{self.filename}:{line}: {where}: {message}")

    def convert(self, node: yaml.Node, where: str) -> Any:
        self.lines.setdefault(where, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = f"{where}.{key}" if where else key
                self.lines[child] = key_node.start_mark.line + 1
                if key in out:
                    self.error(child, "key appears twice; keep one")
                out[key] = self.convert(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, f"{where}[{i}]") for i, item in enumerate(node.value)]
        return self.scalars.construct_object(node, deep=True)


def load_manifest(app_root: Path, text: str | None = None) -> Manifest:
    """Read ``deploy.yaml`` from ``app_root`` (or ``text``) and validate it.

    :raises ManifestError: with every problem found, each naming file:line and key.
    """
    app_root = Path(app_root)
    if text is None:
        path = app_root / MANIFEST
        if not path.is_file():
            raise ManifestError([f"{MANIFEST}: not found in {app_root}; create it (see `hotplate init`)"])
        text = path.read_text()
    loc = _Located(MANIFEST)
    try:  # composing finds syntax errors; converting, scalars no safe loader reads (`=`, `!!python/...`)
        _strict(text)
        node = yaml.compose(text, Loader=_LOADER)
        data = loc.convert(node, "") if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        raise ManifestError([f"{MANIFEST}:{line}: not valid YAML: {getattr(e, 'problem', e)}"]) from None
    manifest = _Validator(loc, app_root).manifest(data)
    if loc.problems:
        raise ManifestError(loc.problems)
    return manifest


@functools.lru_cache(maxsize=4096)
def _rule_error(path: str) -> str | None:
    """What werkzeug finds wrong with a route pattern, if anything. Kept:
    werkzeug compiles Python for each rule it binds (3 ms for ten routes),
    and a controller sees the same patterns deploy after deploy."""
    try:
        Map([Rule(path, endpoint="check")])
    except (ValueError, LookupError, SyntaxError) as e:  # werkzeug: SyntaxError for a repeated <name>
        return str(e)
    return None


class _Validator:
    """Checks each level of the manifest, collecting every problem at once."""

    def __init__(self, loc: _Located, root: Path):
        self.loc = loc
        self.root = root.resolve()

    def keys(self, data: dict, allowed: set[str], where: str) -> None:
        for key in data:
            if key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), n=1)
                tip = f"did you mean `{hint[0]}`?" if hint else f"allowed keys: {', '.join(sorted(allowed))}"
                self.loc.error(f"{where}.{key}" if where else key, f"unknown key; {tip}")

    def manifest(self, data: Any) -> Manifest:
        if not isinstance(data, dict):
            self.loc.error("", "the manifest must be a mapping with a `modules:` key")
            return Manifest("app", ())
        self.keys(data, TOP_KEYS, "")
        default_timeout = self.timeout(data.get("timeout"), "timeout", DEFAULT_TIMEOUT_MS)
        modules_data = data.get("modules")
        if not isinstance(modules_data, dict) or not modules_data:
            self.loc.error("modules", "required: a mapping of module name to {source, routes}")
            modules_data = {}
        modules = tuple(
            self.module(name, spec, f"modules.{name}", default_timeout)
            for name, spec in modules_data.items()
        )
        self.check_conflicts(modules)
        return Manifest(str(data.get("app", "app")), modules, self.limits(data.get("limits"), "limits"))

    def limits(self, spec: Any, where: str) -> Limits:
        if spec is None:
            return Limits()
        if not isinstance(spec, dict):
            self.loc.error(where, "a mapping: {max_requests: 10000, max_rss: 512MiB}")
            return Limits()
        self.keys(spec, LIMIT_KEYS, where)
        sizes = {key: None if spec.get(key) is None else
                 self.size(spec[key], f"{where}.{key}", 0, low=low, high=1024 ** 4)
                 for key, low in (("max_rss", 16 * 1024 ** 2), ("address_space", 256 * 1024 ** 2),
                                  ("job_memory", 64 * 1024 ** 2))}
        job_timeout = None if spec.get("job_timeout") is None else \
            self.timeout(spec["job_timeout"], f"{where}.job_timeout", 3_600_000)
        return Limits(self.count(spec, "max_requests", where, 0, "requests (0: never replace)"), sizes["max_rss"],
                      sizes["address_space"], self.count(spec, "open_files", where, 64, "descriptors"),
                      self.count(spec, "processes", where, 64, "processes and threads"), job_timeout,
                      sizes["job_memory"])

    def count(self, spec: dict, key: str, where: str, low: int, what: str) -> int | None:
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            self.loc.error(f"{where}.{key}", f"{value!r}: a whole number of {what}, at least {low}")
            return None
        return value

    def module(self, name: str, spec: Any, where: str, default_timeout: int) -> Module:
        if not NAME_RE.match(name):
            self.loc.error(where, "module names are lower case letters, digits, - and _, starting with a letter")
        if not isinstance(spec, dict):
            self.loc.error(where, "must be a mapping with `source:` and `routes:`")
            return Module(name, "", ())
        self.keys(spec, MODULE_KEYS, where)
        timeout = self.timeout(spec.get("timeout"), f"{where}.timeout", default_timeout)
        routes_data = spec.get("routes", [])
        sockets_data = spec.get("websockets", [])
        if not isinstance(routes_data, list) or not isinstance(sockets_data, list) or not (routes_data or sockets_data):
            self.loc.error(f"{where}.routes", "required: a list of {path, handler, methods} (or `websockets:`)")
            routes_data = routes_data if isinstance(routes_data, list) else []
            sockets_data = sockets_data if isinstance(sockets_data, list) else []
        routes = tuple(self.route(r, f"{where}.routes[{i}]", timeout) for i, r in enumerate(routes_data))
        sockets = tuple(self.socket(w, f"{where}.websockets[{i}]") for i, w in enumerate(sockets_data))
        health = spec.get("health")
        if health is not None and not any(r.path == health and "GET" in r.methods for r in routes):
            self.loc.error(f"{where}.health", f"{health!r} is not one of this module's GET routes; add it to `routes:`")
        return Module(
            name=name,
            source=self.source(spec.get("source"), f"{where}.source"),
            routes=routes,
            cflags=self.cflags(spec, where),
            include=tuple(self.directory(d, f"{where}.include") for d in self.strings(spec, "include", where)),
            libs=self.names(spec, "libs", where, "write `sqlite3`, not `-lsqlite3`"),
            pkg_config=self.names(spec, "pkg-config", where, "write the pkg-config package name, e.g. `zlib`"),
            config=self.config(spec.get("config"), f"{where}.config"),
            health=health,
            line=self.loc.lines.get(where, 0),
            websockets=sockets,
            unconfined=self.reason(spec.get("unconfined"), f"{where}.unconfined"),
        )

    def reason(self, value: Any, where: str) -> str | None:
        if value is not None and (not isinstance(value, str) or not value.strip()):
            self.loc.error(where, "say why the module needs the calls the system-call filter forbids "
                                  "(execve, ptrace, mount...), e.g. `unconfined: runs /usr/bin/convert`")
            return None
        return value

    def route(self, spec: Any, where: str, default_timeout: int) -> Route:
        if not isinstance(spec, dict):
            self.loc.error(where, "a route is a mapping: {path: /x, handler: symbol}")
            return Route("", (), "", default_timeout, 0)
        self.keys(spec, ROUTE_KEYS, where)
        path = spec.get("path")
        if not isinstance(path, str) or not self.pattern_ok(path, f"{where}.path"):
            path = ""
        handler = spec.get("handler")
        if not isinstance(handler, str) or not SYMBOL_RE.match(handler):
            self.loc.error(f"{where}.handler", "required: the name of an exported C function (HP_EXPORT int f(hp_request *, hp_response *))")
            handler = ""
        elif handler.startswith("hp_"):
            self.loc.error(f"{where}.handler", "names starting with hp_ are reserved for the SDK; rename the function")
        return Route(path, self.methods(spec.get("methods", ["GET"]), f"{where}.methods"), handler,
                     self.timeout(spec.get("timeout"), f"{where}.timeout", default_timeout),
                     self.loc.lines.get(where, 0))

    def socket(self, spec: Any, where: str) -> Socket:
        if not isinstance(spec, dict):
            self.loc.error(where, "a WebSocket route is a mapping: {path: /ws, on_message: symbol}")
            return Socket("", "", None, None, (), SOCKET_TIMEOUT_MS, DEFAULT_MAX_MESSAGE, 0)
        self.keys(spec, SOCKET_KEYS, where)
        path = spec.get("path")
        if not isinstance(path, str) or not self.pattern_ok(path, f"{where}.path"):
            path = ""
        handlers = {key: self.symbol(spec.get(key), f"{where}.{key}", key == "on_message")
                    for key in ("on_open", "on_message", "on_close")}
        protocols = self.strings(spec, "subprotocols", where)
        for name in protocols:
            if not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", name):
                self.loc.error(f"{where}.subprotocols", f"{name!r} is not a subprotocol token (letters, digits, . - _)")
        return Socket(path, handlers["on_message"] or "", handlers["on_open"], handlers["on_close"], protocols,
                      self.timeout(spec.get("timeout"), f"{where}.timeout", SOCKET_TIMEOUT_MS),
                      self.size(spec.get("max_message"), f"{where}.max_message", DEFAULT_MAX_MESSAGE),
                      self.loc.lines.get(where, 0))

    def symbol(self, value: Any, where: str, required: bool) -> str | None:
        if value is None and not required:
            return None
        if not isinstance(value, str) or not SYMBOL_RE.match(value):
            self.loc.error(where, "required: the name of an exported C function (see hotplate.h, WebSocket handlers)"
                           if value is None else f"{value!r} is not a C function name")
            return None
        if value.startswith("hp_"):
            self.loc.error(where, "names starting with hp_ are reserved for the SDK; rename the function")
        return value

    def size(self, value: Any, where: str, default: int, low: int = 1, high: int = 64 * 1024 ** 2) -> int:
        if value is None:
            return default
        match = SIZE_RE.match(str(value).strip())
        n = int(match.group(1)) * SIZE_UNITS[match.group(2)] if match and not isinstance(value, bool) else 0
        if not low <= n <= high:
            self.loc.error(where, f"{value!r} is not a size; write bytes (65536) or '64KiB', '1MiB' "
                                  f"(from {_size(low)} to {_size(high)})")
            return default
        return n

    def pattern_ok(self, path: str, where: str) -> bool:
        if not path.startswith("/"):
            self.loc.error(where, f"{path!r} must start with /")
            return False
        if path.startswith(RESERVED_PREFIX):
            self.loc.error(where, f"paths under {RESERVED_PREFIX}/ are reserved for the server; choose another path")
            return False
        if (why := _rule_error(path)) is not None:
            self.loc.error(where, f"bad pattern {path!r}: {why}; write parameters as <name> or <int:name>, "
                                  "each name once")
            return False
        if (why := unserved(path)) is not None:
            self.loc.error(where, f"bad pattern {path!r}: {why}")
            return False
        return True

    def methods(self, value: Any, where: str) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            self.loc.error(where, f"a method or a list of them: {', '.join(METHODS)}")
            return ("GET",)
        upper = tuple(str(m).upper() for m in items)
        for m in upper:
            if m not in METHODS:
                self.loc.error(where, f"unknown method {m!r}; use one of {', '.join(METHODS)}")
        return upper

    def timeout(self, value: Any, where: str, default: int) -> int:
        if value is None:
            return default
        match = TIMEOUT_RE.match(str(value).strip())
        ms = None
        if match and not isinstance(value, bool):
            ms = float(match.group(1)) * (1 if match.group(2) == "ms" else 1000)
        if ms is None or ms <= 0 or ms > 3_600_000:
            self.loc.error(where, f"{value!r} is not a timeout; write seconds (30, 2.5) or a string like '500ms' (at most 1 hour)")
            return default
        return int(ms)

    def inside_root(self, rel: Any, where: str, what: str) -> Path | None:
        if not isinstance(rel, str) or not rel:
            self.loc.error(where, f"required: a {what} path relative to the app directory")
            return None
        path = (self.root / rel).resolve()
        if self.root not in path.parents and path != self.root:
            self.loc.error(where, f"{rel!r} is outside the app directory; keep sources inside it")
            return None
        return path

    def source(self, rel: Any, where: str) -> str:
        path = self.inside_root(rel, where, "C source file")
        if path is None:
            return ""
        if not rel.endswith(".c"):
            self.loc.error(where, f"{rel!r}: a module is one C file ending in .c")
        elif not path.is_file():
            self.loc.error(where, f"{rel!r} does not exist; check the path (relative to deploy.yaml)")
        return rel

    def directory(self, rel: str, where: str) -> str:
        path = self.inside_root(rel, where, "directory")
        if path is not None and not path.is_dir():
            self.loc.error(where, f"{rel!r} is not a directory")
        return rel

    def strings(self, spec: dict, key: str, where: str) -> tuple[str, ...]:
        value = spec.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.loc.error(f"{where}.{key}", "must be a list of strings")
            return ()
        return tuple(value)

    def cflags(self, spec: dict, where: str) -> tuple[str, ...]:
        """Compiler flags, from an allowlist: a push may change how its C
        compiles, never make the compiler run or read anything else."""
        flags = self.strings(spec, "cflags", where)
        pending = None  # -include/-imacros whose file is the next item
        for flag in flags:
            if pending:
                self.inside_root(flag, f"{where}.cflags", f"file for {pending}")
                pending = None
            elif flag in ("-include", "-imacros"):
                pending = flag
            elif flag.startswith(("-include", "-imacros")):
                option = "-include" if flag.startswith("-include") else "-imacros"
                self.inside_root(flag[len(option):].lstrip("="), f"{where}.cflags", f"file for {option}")
            elif why := refused_cflag(flag):
                self.loc.error(f"{where}.cflags", f"{flag!r} is not allowed: {why}; allowed: {ALLOWED_CFLAGS}")
        if pending:
            self.loc.error(f"{where}.cflags", f"{pending} needs a file after it (inside the app)")
        return flags

    def names(self, spec: dict, key: str, where: str, hint: str) -> tuple[str, ...]:
        names = self.strings(spec, key, where)
        for name in names:
            if not LIB_RE.match(name) or name.startswith("-"):
                self.loc.error(f"{where}.{key}", f"{name!r} is not a library name; {hint}")
        return names

    def config(self, value: Any, where: str) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, dict) or any(isinstance(v, (dict, list)) for v in value.values()):
            self.loc.error(where, "must be a mapping of names to plain values (text, numbers, booleans)")
            return ()
        return tuple((str(k), _config_text(v)) for k, v in value.items())

    def check_conflicts(self, modules: tuple[Module, ...]) -> None:
        """Two routes conflict when their patterns have the same shape (names of
        parameters aside) and they share a method."""
        seen: dict[tuple[str, str], tuple[str, Route | Socket]] = {}
        for mod in modules:
            for route in mod.routes + mod.websockets:
                if not route.path:
                    continue
                shape = PARAM_RE.sub(lambda m: f"<{m.group(1) or 'default'}>", route.path)
                for method in route.methods:
                    other = seen.get((shape, method))
                    if other:
                        kind = "duplicate" if other[1].path == route.path else "conflicting"
                        self.loc.problems.append(
                            f"{MANIFEST}:{route.line}: modules.{mod.name}: {kind} route {method} {route.path}: "
                            f"{MANIFEST}:{other[1].line} (module {other[0]}) already serves {method} {other[1].path}; "
                            "remove one or change its path")
                    else:
                        seen[(shape, method)] = (mod.name, route)


def _config_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
