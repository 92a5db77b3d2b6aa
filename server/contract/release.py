"""The release format: the one contract between controller and server.

The controller validates a manifest into these types (controller/plan.py),
adds what the build produced and writes them as ``release.json``
(controller/release.py); each worker reads them back (server/modules.py).
Both sides import this module, so a field exists once. ``FORMAT`` versions
the file: a server refuses a release written in a format it does not know.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

#: The version of the release.json layout this code reads and writes.
FORMAT = 1
#: The response header naming the release that answered (both request paths:
#: server/worker.py and serve.c's format_head), so a load balancer's log or a
#: client can tell which release served each request during a rollout.
RELEASE_HEADER = "X-Hotplate-Release"


@dataclass(frozen=True)
class Route:
    """One method set + path pattern mapped to one exported C handler."""

    path: str
    methods: tuple[str, ...]
    handler: str
    timeout_ms: int
    line: int = 0


@dataclass(frozen=True)
class Socket:
    """A WebSocket path mapped to a connection's handlers (on_message required)."""

    path: str
    on_message: str
    on_open: str | None
    on_close: str | None
    subprotocols: tuple[str, ...]
    timeout_ms: int
    max_message: int
    line: int = 0

    #: The handshake is a GET: a WebSocket path conflicts with a GET route of the same shape.
    methods = ("GET",)

    @property
    def handlers(self) -> tuple[str, ...]:
        return tuple(h for h in (self.on_open, self.on_message, self.on_close) if h)

    @property
    def symbols(self) -> dict[str, str | None]:
        """Handler names by event: "open", "message", "close"."""
        return {"open": self.on_open, "message": self.on_message, "close": self.on_close}


@dataclass(frozen=True)
class Limits:
    """Per-worker bounds; None leaves the server's default (server/confine.py
    for the last three, which are resource limits of the process)."""

    max_requests: int | None = None
    max_rss: int | None = None
    address_space: int | None = None
    open_files: int | None = None
    processes: int | None = None
    #: each background job's time (ms) and address space (bytes): server/jobs.py
    job_timeout: int | None = None
    job_memory: int | None = None


@dataclass(frozen=True)
class ModuleSpec:
    """One built module of a release: its object and what it serves."""

    name: str
    source: str
    key: str
    object: str
    config: tuple[tuple[str, str], ...]
    health: str | None
    routes: tuple[Route, ...]
    websockets: tuple[Socket, ...]
    #: why this module needs the calls the system-call filter forbids; set,
    #: the release's workers run without the filter
    unconfined: str | None = None


@dataclass(frozen=True)
class ReleaseSpec:
    """What a worker loads: every module, the app's limits, and the digest
    of the config set it runs with (controller/appconfig.py; None: none)."""

    id: str
    app: str
    modules: tuple[ModuleSpec, ...]
    limits: Limits = Limits()
    config: str | None = None

    def to_json(self) -> dict:
        data = {"format": FORMAT, **asdict(self)}
        # Unset fields are omitted, so that releases of apps without them keep their ids.
        data["limits"] = {k: v for k, v in data["limits"].items() if v is not None}
        if not data["limits"]:
            del data["limits"]
        for m in data["modules"]:
            if m["unconfined"] is None:
                del m["unconfined"]
        if data["config"] is None:
            del data["config"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "ReleaseSpec":
        """:raises ValueError: for a format this code does not know."""
        if data.get("format", FORMAT) != FORMAT:
            raise ValueError(f"release format {data['format']} is not {FORMAT}: this server is older or newer "
                             "than the controller that built the release")
        modules = tuple(ModuleSpec(
            m["name"], m["source"], m["key"], m["object"], tuple(tuple(kv) for kv in m["config"]), m["health"],
            tuple(Route(r["path"], tuple(r["methods"]), r["handler"], r["timeout_ms"], r["line"]) for r in m["routes"]),
            tuple(Socket(w["path"], w["on_message"], w["on_open"], w["on_close"], tuple(w["subprotocols"]),
                         w["timeout_ms"], w["max_message"], w["line"]) for w in m.get("websockets", [])),
            m.get("unconfined"),
        ) for m in data["modules"])
        return cls(data["id"], data["app"], modules, Limits(**data.get("limits", {})), data.get("config"))

    @classmethod
    def load(cls, release_dir: Path) -> "ReleaseSpec":
        return cls.from_json(json.loads((Path(release_dir) / "release.json").read_text()))
