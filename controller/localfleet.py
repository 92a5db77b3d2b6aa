"""``hotplate fleet up``: a whole fleet on one machine, for trying it.

On loopback, from Debian's packages: etcd (who leads), a registry (the
releases), NATS (publications across hosts), N hosts (two candidates that
build in turn, the rest followers) and nginx in front of them. Each host is
a ``hotplate up`` of its own, with its own state directory under ROOT, as
it would be on its own machine. Each process is supervised: one that dies
is started again (with backoff, logged), never a reason to stop the rest;
Ctrl-C or SIGTERM stops them all, also when started from a script.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hotplate.server import pidfile
from hotplate.server.contract.layout import Layout

from .errors import HotplateError

START_TIMEOUT_S = 60
#: Seconds before a dead process is started again: doubling from the first, up to the last.
BACKOFF_S = (1.0, 30.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if not found:
        raise HotplateError(f"{name} is not installed: run scripts/setup (it installs it from Debian)")
    return found


def service(name: str, cmd: list[str], port: int, log: Path, host: str = "127.0.0.1") -> subprocess.Popen:
    """Start one process and wait until it listens on ``host:port``."""
    with Path(log).open("a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not listening(port, host):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise HotplateError(f"{name} did not start; see {log}")
        time.sleep(0.05)
    return proc


def etcd_cmd(root: Path, client: int, peer: int, host: str = "127.0.0.1") -> list[str]:
    """A one-member etcd keeping its data in ``root/etcd`` (started again on the same
    port and data, it has every key and lease)."""
    return [binary("etcd"), "--name", "fleet", "--data-dir", str(root / "etcd"),
            "--listen-client-urls", f"http://{host}:{client}", "--advertise-client-urls", f"http://{host}:{client}",
            "--listen-peer-urls", f"http://{host}:{peer}", "--initial-advertise-peer-urls", f"http://{host}:{peer}",
            "--initial-cluster", f"fleet=http://{host}:{peer}"]


def registry_cmd(root: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """An OCI registry keeping its blobs in ``root/registry`` (started again on the same
    port and storage, it has them all)."""
    config = root / f"registry-{port}.yml"
    config.write_text(json.dumps({"version": 0.1, "http": {"addr": f"{host}:{port}"},
                                  "storage": {"filesystem": {"rootdirectory": str(root / "registry")},
                                              "delete": {"enabled": True}}}))
    return [binary("docker-registry"), "serve", str(config)]


def nats_cmd(root: Path, port: int) -> list[str]:
    return [binary("nats-server"), "-a", "127.0.0.1", "-p", str(port)]


def etcd(root: Path, port: int | None = None, host: str = "127.0.0.1") -> tuple[subprocess.Popen, int]:
    """etcd started (:func:`etcd_cmd`) on ``host``; (process, client port)."""
    port = port or free_port()
    return service("etcd", etcd_cmd(root, port, free_port(), host), port, root / "etcd.log", host), port


def registry(root: Path, port: int | None = None, host: str = "127.0.0.1") -> tuple[subprocess.Popen, int]:
    """A registry started (:func:`registry_cmd`) on ``host``; (process, port)."""
    port = port or free_port()
    return service("registry", registry_cmd(root, port, host), port, root / "registry.log", host), port

def nats(root: Path, port: int | None = None) -> tuple[subprocess.Popen, int]:
    """A NATS server started (:func:`nats_cmd`); (process, port)."""
    port = port or free_port()
    return service("nats", nats_cmd(root, port), port, root / "nats.log"), port


@dataclass
class Supervised:
    """One process of the fleet, and how to start it again."""

    name: str
    cmd: list[str]
    port: int
    proc: subprocess.Popen
    restarts: int = 0
    due: float | None = None  # monotonic time of the next start, while it is dead


@dataclass
class Ports:
    """Where each service listens: all from ``base`` when given (``--base-port``),
    else free ports; nginx on ``lb``."""

    lb: int
    base: int | None = None
    taken: list[int] = field(default_factory=list)

    def next(self) -> int:
        port = free_port() if self.base is None else self.base + len(self.taken)
        self.taken.append(port)
        return port


class LocalFleet:
    def __init__(self, root: Path, source: str, hosts: int = 3, port: int = 8080, base_port: int | None = None):
        self.root, self.source, self.hosts, self.port = Path(root).resolve(), source, hosts, port
        self.ports = Ports(port, base_port)
        self.procs: list[subprocess.Popen] = []
        self.supervised: list[Supervised] = []
        self.apps: list[int] = []
        self.urls: dict[str, str] = {}

    def spawn(self, name: str, cmd: list[str], port: int) -> None:
        try:
            proc = service(name, cmd, port, self.root / f"{name}.log")
        except HotplateError:
            self.stop()
            raise
        self.procs.append(proc)
        self.supervised.append(Supervised(name, cmd, port, proc))

    def start(self) -> "LocalFleet":
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)  # the hosts' workers' accounts pass through
        p = self.ports
        etcd_port, etcd_peer, registry_port, nats_port = p.next(), p.next(), p.next(), p.next()
        self.spawn("etcd", etcd_cmd(self.root, etcd_port, etcd_peer), etcd_port)
        self.spawn("registry", registry_cmd(self.root, registry_port), registry_port)
        self.spawn("nats", nats_cmd(self.root, nats_port), nats_port)
        publish = f"http://127.0.0.1:{registry_port}/app"
        for i in range(self.hosts):
            app, api = p.next(), p.next()
            role = [self.source, "--publish", publish, "--poll", "1"] if i < 2 else ["--follow", publish, "--poll", "0.5"]
            self.spawn(f"host{i + 1}", [sys.executable, "-m", "hotplate.controller.cli", "up", *role,
                                         "--fleet", f"etcd://127.0.0.1:{etcd_port}", "--host-name", f"host{i + 1}",
                                         "--state", str(self.root / f"host{i + 1}"), "--bind", f"127.0.0.1:{app}",
                                         "--api", f"127.0.0.1:{api}", "--nats", f"nats://127.0.0.1:{nats_port}"], api)
            self.apps.append(app)
            self.urls[f"host{i + 1}"] = f"http://127.0.0.1:{app}/ (controller http://127.0.0.1:{api}/)"
        self.balance()
        self.urls.update({"etcd": f"etcd://127.0.0.1:{etcd_port}", "registry": publish,
                          "nats": f"nats://127.0.0.1:{nats_port}"})
        return self

    def balance(self) -> None:
        """nginx in front of the hosts (keep-alive to them, the next host on an error); its
        access log (status, the host's status and address, seconds, the release that
        answered: its X-Hotplate-Release) is ROOT/access.log."""
        upstream = "".join(f"server 127.0.0.1:{p} max_fails=0;" for p in self.apps)
        conf = self.root / "nginx.conf"
        conf.write_text(
            f"pid {self.root / 'nginx.pid'}; error_log {self.root / 'nginx-error.log'}; daemon off;"
            "events { worker_connections 4096; }"
            "http { log_format fleet '$time_iso8601 $status $upstream_status $upstream_addr $request_time'"
            " ' $upstream_http_x_hotplate_release $request';"
            f" access_log {self.root / 'access.log'} fleet; upstream fleet {{ {upstream} keepalive 64; }}"
            f" server {{ listen 127.0.0.1:{self.port};"
            " location / { proxy_pass http://fleet; proxy_http_version 1.1; proxy_set_header Connection \"\";"
            " proxy_next_upstream error timeout http_502 http_503; } } }")
        self.spawn("nginx", [binary("nginx"), "-p", str(self.root), "-c", str(conf)], self.port)
        self.urls["load balancer"] = f"http://127.0.0.1:{self.port}/"

    def supervise(self, stopping: threading.Event) -> None:
        """Start again whatever dies, with backoff, until ``stopping``."""
        while not stopping.wait(0.5):
            for s in self.supervised:
                code = s.proc.poll()
                if code is None:
                    continue
                now = time.monotonic()
                if s.due is None:
                    wait = min(BACKOFF_S[0] * 2 ** min(s.restarts, 8), BACKOFF_S[1])
                    s.due = now + wait
                    print(f"fleet: {s.name} exited ({_exit(code)}); starting it again in {wait:g}s "
                          f"(see {self.root / (s.name + '.log')})", flush=True)
                elif now >= s.due:
                    s.restarts, s.due = s.restarts + 1, None
                    try:
                        s.proc = service(s.name, s.cmd, s.port, self.root / f"{s.name}.log")
                        self.procs.append(s.proc)
                        print(f"fleet: {s.name} is back (restart {s.restarts})", flush=True)
                    except HotplateError as e:
                        print(f"fleet: {e}", flush=True)
                        s.proc = _Dead()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        for i in range(self.hosts):  # a host killed with -9 leaves its app server running: stop it too
            master = pidfile.read(Layout(self.root / f"host{i + 1}").server_pid)
            if master is not None:
                os.kill(master, signal.SIGTERM)


class _Dead:
    """A process that could not be started (its next try is due)."""

    returncode = 1

    def poll(self) -> int:
        return 1


def _exit(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"code {code}"


def up(root: Path, source: str, hosts: int, port: int, base_port: int | None = None) -> int:
    """Start the fleet, say where everything is, keep it running, and stop
    it all on Ctrl-C or SIGTERM."""
    if hosts < 2:
        raise HotplateError("a fleet has at least 2 hosts (two candidates to lead)")
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # (a shell's background job starts with SIGINT ignored)
        signal.signal(sig, lambda *_: stopping.set())
    fleet = LocalFleet(root, source, hosts, port, base_port).start()
    try:
        for name, url in fleet.urls.items():
            print(f"  {name:<14} {url}")
        print(f"commit to {source}: the leader builds it, every host serves it (logs in {fleet.root}). "
              "Ctrl-C stops it all.", flush=True)
        fleet.supervise(stopping)
        return 0
    finally:
        fleet.stop()
