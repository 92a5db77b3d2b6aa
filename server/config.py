"""Server settings: defaults here, overridable by ``HOTPLATE_*`` environment variables."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

#: Paths the server answers itself (health, release); manifests may not use them.
RESERVED_PREFIX = "/_hotplate"


#: What of its starter's environment the app server keeps (module code can
#: read it from /proc/self/environ): where programs and caches are, the
#: locale and the time zone, and hotplate's own settings; anything else
#: (a cloud key, a token) only when named with ``--pass-env``.
KEPT_ENVIRONMENT = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "XDG_CACHE_HOME")


def server_environment(pass_env: tuple[str, ...] = (), environ=os.environ) -> dict[str, str]:
    """The environment the app server starts with (:data:`KEPT_ENVIRONMENT`)."""
    return {k: v for k, v in environ.items()
            if k in KEPT_ENVIRONMENT or k.startswith(("HOTPLATE_", "LC_")) or k in pass_env}


#: How an environment variable's text becomes a setting, by the field's type.
PARSE = {"int": int, "float": float, "bool": lambda raw: raw.strip().lower() not in ("0", "false", "no", "off", "")}


@dataclass(frozen=True)
class ServerConfig:
    """How the gunicorn front runs.

    :param bind: address the app listens on (loopback by default).
    :param workers: worker processes; each loads every module.
    :param threads: request threads per worker (gthread).
    :param max_body: request body cap in bytes; larger bodies get 413.
    :param graceful_timeout: seconds a retiring worker may finish requests.
    :param ws_send_buffer: bytes a WebSocket client may leave unread before
        it is watched as a slow reader (server/websocket/connection.py).
    :param ws_ping_interval: seconds of silence before a WebSocket is pinged;
        one silent ``ws_ping_timeout`` seconds more is dropped.
    :param ws_replay_seconds: seconds of publications each worker keeps for
        connections that move to it or resume (hp_ws_resume) on it.
    :param max_requests: a worker is replaced after this many requests, plus
        up to 10% jitter so that workers do not all go at once (0: never);
        the manifest's ``limits:`` overrides it.
    :param max_rss: a worker is replaced once its resident memory passes
        this many bytes (0: never); the manifest's ``limits:`` overrides it.
    :param user: the account workers run as (the master, which never loads
        module code, stays as started); None: the master's own.
    :param store: the shared key-value store behind hp_kv_*: ``lmdb:PATH``
        or ``redis://HOST:PORT/DB``; None: LMDB in the workers' directory.
    :param config_dir: where the controller renders releases' config sets
        (controller/appconfig.py) for hp_config(); None: the working directory.
    :param jobs: background jobs run at once by the job runner (server/jobs.py); 0: no runner.
    :param header_timeout: seconds a client may take to send a request's
        head (line and headers) before it is dropped; the head is read
        without a thread, so slow clients cost a descriptor each.
    :param body_timeout: seconds a module route waits for more of a
        request's body before it answers 408.
    :param max_connections: open connections per worker (gunicorn's
        worker_connections), slow ones included.
    :param nats: a NATS server (``nats://HOST:PORT``) that carries
        WebSocket publications to the other hosts of a fleet; None: one host.
    :param dev_errors: under ``hotplate dev``, the file that holds why the
        latest save did not go live; while it exists, the app answers every
        request with it (server/worker.py).
    :param sanitize: with sanitizer builds (``hotplate dev --sanitize``), the
        directory their reports go to (server/sanitize.py); None otherwise.
    :param fast_path: C's own threads accept, and answer module routes
        from accept to write (server/core.py); off
        (``HOTPLATE_FAST_PATH=0``), gunicorn's threads accept and hand each
        connection to the same C core.
    """

    bind: str = "127.0.0.1:8000"
    workers: int = 2
    threads: int = 8
    max_body: int = 10 * 1024 * 1024
    max_header_fields: int = 100
    max_header_size: int = 8190
    max_request_line: int = 8190
    graceful_timeout: int = 30
    timeout: int = 60
    backlog: int = 2048
    keepalive: int = 5
    accesslog: str | None = None
    ws_send_buffer: int = 1024 * 1024
    ws_ping_interval: int = 20
    ws_ping_timeout: int = 20
    ws_replay_seconds: float = 30.0
    max_requests: int = 1_000_000
    max_rss: int = 1024 ** 3
    user: str | None = None
    sanitize: str | None = None
    store: str | None = None
    config_dir: str | None = None
    jobs: int = 2
    header_timeout: int = 10
    body_timeout: int = 30
    max_connections: int = 10_000
    nats: str | None = None
    dev_errors: str | None = None
    fast_path: bool = True

    @classmethod
    def from_env(cls, prefix: str = "HOTPLATE_", **overrides) -> "ServerConfig":
        """Defaults, then ``HOTPLATE_WORKERS=4``-style variables, then ``overrides``."""
        values = {}
        for f in fields(cls):
            raw = os.environ.get(prefix + f.name.upper())
            if raw is not None:
                values[f.name] = PARSE.get(f.type, str)(raw)
        cfg = replace(cls(), **values)
        return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
