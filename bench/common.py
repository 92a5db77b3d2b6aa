"""Helpers shared by the benchmarks: servers on loopback ports, wrk, tables."""
from __future__ import annotations

import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from hotplate.server.contract.layout import Layout

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def scratch():
    """A temporary directory for a benchmark's apps and state, removed after.
    Run as root, hotplate's workers run as their own account, which must
    pass through it (0711: pass, not list)."""
    with tempfile.TemporaryDirectory() as name:
        Path(name).chmod(0o711)
        yield Path(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, log: Path, timeout: float = 60) -> subprocess.Popen:
    """Start a server and wait until ``url`` answers."""
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited: {log.read_text()}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return proc
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or its workers not up
            time.sleep(0.1)
    sys.exit(f"server not ready: {log.read_text()}")


def one_module_app(root: Path, manifest: str, name: str, source: str) -> Path:
    """An app directory with a deploy.yaml and one module source."""
    root.mkdir()
    (root / "deploy.yaml").write_text(manifest)
    (root / name).write_text(source)
    return root


def serve(app: Path, state: Path, ready_path: str, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``hotplate serve`` with one worker on a free port; the process and its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "hotplate.controller.cli", "serve", str(app), "--state", str(state),
           "--bind", f"127.0.0.1:{port}", "--workers", "1", *extra]
    return start(cmd, url + ready_path, log), url


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def wrk(url: str, seconds: int = 5, connections: int = 32, threads: int = 2) -> dict:
    """Run wrk (keep-alive) and return requests/s, p99 latency (ms) and errors."""
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+([\d.]+\w+)", out, re.M).group(1))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99_ms": p99, "socket_errors": errors.group(1) if errors else "none",
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def median(values) -> float:
    return statistics.median(values)


def table(title: str, header: list[str], rows: list[list]) -> None:
    """Print a plain text table."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


class Up:
    """``hotplate up`` hosting a repository, on free loopback ports."""

    def __init__(self, tmp: Path, *extra: str, workers: int = 2):
        tmp.mkdir(parents=True, exist_ok=True)
        self.state = tmp / "state"
        self.layout = Layout(self.state)  # (its paths: the contract's, not built here)
        self.port, self.api_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hotplate.controller.cli", "up", "--state", str(self.state), "--bind", f"127.0.0.1:{self.port}",
             "--api", f"127.0.0.1:{self.api_port}", "--workers", str(workers), *extra],
            stdout=(tmp / "up.log").open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.api + "/api/status", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        sys.exit("hotplate up did not start")

    def status(self) -> dict:
        return requests.get(self.api + "/api/status", headers=self.auth(), timeout=5).json()

    def sync(self) -> None:
        """Wake the controller as a webhook would: it fetches its source now."""
        requests.post(self.api + "/api/sync", headers=self.auth(), timeout=5).raise_for_status()

    def deploys(self, limit: int = 1000) -> list[dict]:
        return requests.get(f"{self.api}/api/deploys?limit={limit}", headers=self.auth(), timeout=5).json()

    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.layout.token_file.read_text().strip()}"}

    def server_pid(self) -> int:
        return int(self.layout.server_pid.read_text())

    def stop(self) -> None:
        stop(self.proc)


def make_app(root: Path, modules: int = 10) -> Path:
    """An app of ``modules`` modules, each with one route answering its version."""
    root.mkdir(parents=True)
    lines = ["modules:"]
    for i in range(modules):
        lines += [f"  m{i}:", f"    source: modules/m{i}.c", "    routes:", f"      - {{path: /m{i}, handler: h}}"]
        write_module(root, i, "v1")
    (root / "deploy.yaml").write_text("\n".join(lines) + "\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "bench@example.com")
    git(root, "config", "user.name", "bench")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "v1")
    return root


def write_module(root: Path, i: int, version: str) -> None:
    (root / "modules").mkdir(exist_ok=True)
    (root / "modules" / f"m{i}.c").write_text(
        "#include <hotplate.h>\nHP_MODULE;\n"
        f'HP_EXPORT int h(hp_request *q, hp_response *r) {{ return hp_res_printf(r, "m{i} {version}\\n"); }}\n')
