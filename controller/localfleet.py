"""``hotplate fleet up``: a whole fleet on one machine, for trying it.

On loopback, from Debian's packages: etcd (who leads), a registry (the
releases), NATS (publications across hosts), N hosts (two candidates that
build in turn, the rest followers) and nginx in front of them. Each host is
a ``hotplate up`` of its own, with its own state directory under ROOT, as
it would be on its own machine. Ctrl-C stops them all.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from .errors import HotplateError

START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if not found:
        raise HotplateError(f"{name} is not installed: run scripts/setup (it installs it from Debian)")
    return found


def service(name: str, cmd: list[str], port: int, log: Path) -> subprocess.Popen:
    """Start one process and wait until it listens on ``port``."""
    with Path(log).open("a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise HotplateError(f"{name} did not start; see {log}")
        time.sleep(0.05)
    return proc


def etcd(root: Path, port: int | None = None) -> tuple[subprocess.Popen, int]:
    """A one-member etcd keeping its data in ``root/etcd`` (started again on the same
    port and data, it has every key and lease); (process, client port)."""
    client, peer = port or free_port(), free_port()
    return service("etcd", [binary("etcd"), "--name", "fleet", "--data-dir", str(root / "etcd"),
                            "--listen-client-urls", f"http://127.0.0.1:{client}",
                            "--advertise-client-urls", f"http://127.0.0.1:{client}",
                            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                            "--initial-cluster", f"fleet=http://127.0.0.1:{peer}"], client, root / "etcd.log"), client


def registry(root: Path, port: int | None = None) -> tuple[subprocess.Popen, int]:
    """An OCI registry keeping its blobs in ``root/registry`` (started again on the same
    port and storage, it has them all); (process, port)."""
    port = port or free_port()
    config = root / f"registry-{port}.yml"
    config.write_text(json.dumps({"version": 0.1, "http": {"addr": f"127.0.0.1:{port}"},
                                  "storage": {"filesystem": {"rootdirectory": str(root / "registry")},
                                              "delete": {"enabled": True}}}))
    return service("registry", [binary("docker-registry"), "serve", str(config)], port, root / "registry.log"), port


def nats(root: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    return service("nats", [binary("nats-server"), "-a", "127.0.0.1", "-p", str(port)], port, root / "nats.log"), port


class LocalFleet:
    def __init__(self, root: Path, source: str, hosts: int = 3, port: int = 8080):
        self.root, self.source, self.hosts, self.port = Path(root).resolve(), source, hosts, port
        self.procs: list[subprocess.Popen] = []
        self.apps: list[int] = []
        self.urls: dict[str, str] = {}

    def spawn(self, name: str, cmd: list[str], port: int) -> None:
        try:
            self.procs.append(service(name, cmd, port, self.root / f"{name}.log"))
        except HotplateError:
            self.stop()
            raise

    def keep(self, started: tuple[subprocess.Popen, int]) -> int:
        self.procs.append(started[0])
        return started[1]

    def start(self) -> "LocalFleet":
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)  # the hosts' workers' account passes through
        try:
            etcd_port, registry_port, nats_port = (self.keep(etcd(self.root)), self.keep(registry(self.root)),
                                                   self.keep(nats(self.root)))
        except HotplateError:
            self.stop()
            raise
        publish = f"http://127.0.0.1:{registry_port}/app"
        for i in range(self.hosts):
            app, api = free_port(), free_port()
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
        access log (status, the host's status and address, seconds) is ROOT/access.log."""
        upstream = "".join(f"server 127.0.0.1:{p} max_fails=0;" for p in self.apps)
        conf = self.root / "nginx.conf"
        conf.write_text(
            f"pid {self.root / 'nginx.pid'}; error_log {self.root / 'nginx-error.log'}; daemon off;"
            "events { worker_connections 4096; }"
            "http { log_format fleet '$time_iso8601 $status $upstream_status $upstream_addr $request_time $request';"
            f" access_log {self.root / 'access.log'} fleet; upstream fleet {{ {upstream} keepalive 64; }}"
            f" server {{ listen 127.0.0.1:{self.port};"
            " location / { proxy_pass http://fleet; proxy_http_version 1.1; proxy_set_header Connection \"\";"
            " proxy_next_upstream error timeout http_502 http_503; } } }")
        self.spawn("nginx", [binary("nginx"), "-p", str(self.root), "-c", str(conf)], self.port)
        self.urls["load balancer"] = f"http://127.0.0.1:{self.port}/"

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


def up(root: Path, source: str, hosts: int, port: int) -> int:
    """Start the fleet, say where everything is, and stop it all on Ctrl-C."""
    if hosts < 2:
        raise HotplateError("a fleet has at least 2 hosts (two candidates to lead)")
    fleet = LocalFleet(root, source, hosts, port).start()
    try:
        for name, url in fleet.urls.items():
            print(f"  {name:<14} {url}")
        print(f"commit to {source}: the leader builds it, every host serves it (logs in {fleet.root}). Ctrl-C stops.",
              flush=True)
        while all(p.poll() is None for p in fleet.procs):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        fleet.stop()
