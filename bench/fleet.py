"""Fleet benchmarks (issue 20), side by side in one run.

1. Commit -> new text answered by every host: an etcd fleet of 3 and of 5
   hosts (a leader and followers, a registry of the bench's own, waves of
   one host after the canary), with every host's health gate bake set to 0
   and to ``hotplate up``'s default. A 10-module app, 10 commits that each
   change one module; the clock runs from the commit and its ``hotplate
   sync`` (as a webhook would) to the new text on every host, polled on
   fresh connections every 5 ms. Targets: bake 0 <= 1.0 s (3 hosts) and
   <= 1.5 s (5); with bakes, the sum of the bakes in series + 1 s.
2. ``hotplate fleet up``'s fleet (etcd, registry, NATS, 3 supervised hosts,
   nginx): wrk through nginx during 10 fleet deploys and 3 kill -9s of the
   leader's controller at a random instant of a rollout. Counts from nginx's
   access log the failed answers and those answered by a release that never
   passed the gate (every answer names its release: X-Hotplate-Release).
   Target: 0 and 0.
3. 1,000 WebSocket connections over the same fleet, across the same deploys
   and kills. Target: 0 dropped, 0 lost.

Run: ``.venv/bin/python -m bench.fleet``.
"""
from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time
from pathlib import Path

import requests

from hotplate.controller import localfleet
from hotplate.controller.localfleet import LocalFleet
from hotplate.controller.registry import RegistrySource
from hotplate.server.contract.layout import Layout

from . import ws
from .common import Up, free_port, git, make_app, median, scratch, stop, table, write_module, wrk

RUNS = 10
BAKE_S = 2.0  # hotplate up's default --bake
TARGET_S = {3: 1.0, 5: 1.5}  # bake 0
KILLS = (3, 6, 9)  # the deploys during which the leader's controller is killed


def main() -> None:
    rows = []
    for hosts in (3, 5):
        for bake in (0.0, BAKE_S):
            ms = sorted(t * 1000 for t in push_to_live(hosts, bake))
            bakes = hosts * bake  # every host's gate bakes in turn: the canary's, then one wave each
            target = (bakes + 1.0) if bake else TARGET_S[hosts]
            rows.append([hosts, f"{bake:g}", f"{median(ms):.0f}", f"{ms[int(len(ms) * 0.9) - 1]:.0f}",
                         f"{ms[-1]:.0f}", f"{bakes * 1000:.0f}", f"<= {target * 1000:.0f}"])
    table(f"commit -> new text on every host, etcd fleet in waves of 1, one module changed, {RUNS} runs, ms",
          ["hosts", "bake s", "median", "p90", "max", "bakes in series", "target"], rows)


def push_to_live(hosts: int, bake: float) -> list[float]:
    """Seconds from each commit to its text on every host of an etcd fleet:
    a leader mirroring the app, followers that watch the rollout."""
    with scratch() as tmp:
        reg, port = localfleet.registry(tmp)
        etcd, etcd_port = localfleet.etcd(tmp)
        url = f"http://127.0.0.1:{port}/bench"
        app = make_app(tmp / "app")
        common = ("--fleet", f"etcd://127.0.0.1:{etcd_port}", "--bake", f"{bake:g}")
        up = [Up(tmp / "h0", str(app), "--publish", url, *common, "--host-name", "h0", "--poll", "60", workers=1)]
        try:
            up += [Up(tmp / f"h{i}", "--follow", url, *common, "--host-name", f"h{i}", workers=1)
                   for i in range(1, hosts)]
            took = []
            for run in range(RUNS + 1):  # the first deploy builds everything: not timed
                version = f"v{run + 2}"
                if run:
                    write_module(app, run % 10, version)
                    git(app, "commit", "-qam", version)
                started = time.monotonic()
                up[0].sync()
                want, path = (f"m{run % 10} {version}\n", f"/m{run % 10}") if run else ("m0 v1\n", "/m0")
                wait_text([h.url + path for h in up], want, poll=0.005)
                if run:
                    took.append(time.monotonic() - started)
            return took
        finally:
            for h in up:
                h.stop()
            stop(etcd)
            stop(reg)


def wait_text(urls: list[str], text: str, timeout: float = 120, poll: float = 0.05) -> None:
    """Until each of ``urls`` answers ``text`` (each on a fresh connection)."""
    deadline = time.monotonic() + timeout
    for u in urls:
        while True:
            try:
                if requests.get(u, timeout=5).text == text:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{text.strip()} did not reach {u}")
            time.sleep(poll)


class Trial:
    """``hotplate fleet up``'s fleet, supervised as ``fleet up`` supervises
    it (a killed host is started again), and what a trial does to it: deploy
    commits, kill the leader's controller mid-rollout, and note which
    releases passed the gate on some host."""

    def __init__(self, tmp: Path, app: Path):
        self.app = app
        self.fleet = LocalFleet(tmp / "fleet", str(app), hosts=3, port=free_port()).start()
        self.stopping = threading.Event()
        self.supervisor = threading.Thread(target=self.fleet.supervise, args=(self.stopping,), daemon=True)
        self.supervisor.start()
        self.lb = self.fleet.urls["load balancer"]
        self.hosts = [f"http://127.0.0.1:{p}" for p in self.fleet.apps]
        self.controllers = {s.name: s for s in self.fleet.supervised if s.name.startswith("host")}
        self.live = RegistrySource(self.fleet.urls["registry"])
        self.passed: set[str] = set()
        self.killed: list[str] = []

    def get(self, host: str, path: str):
        s = self.controllers[host]
        token = Layout(self.fleet.root / host).token_file.read_text().strip()
        return requests.get(f"http://127.0.0.1:{s.port}{path}", headers={"Authorization": f"Bearer {token}"},
                            timeout=5).json()

    def leader(self) -> str | None:
        for host in self.controllers:
            try:
                if self.get(host, "/api/status").get("role") == "leader":
                    return host
            except (requests.RequestException, ValueError, OSError):
                pass
        return None

    def kill_leader(self) -> None:
        """kill -9 the leader's controller at a random instant (0-2.5 s) after it starts deploying."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            host = self.leader()
            if host and self.get(host, "/api/status").get("progressing"):
                time.sleep(random.uniform(0, 2.5))
                os.kill(self.controllers[host].proc.pid, signal.SIGKILL)
                self.killed.append(host)
                return
            time.sleep(0.02)
        raise SystemExit("no leader started a deploy within 60 s")

    def everywhere(self, timeout: float = 180) -> None:
        """Until the leader published the app's HEAD and every host serves its release."""
        commit = git(self.app, "rev-parse", "HEAD")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.live.fetch()
                if self.live.tip() == commit:
                    release = self.live.live["hotplate.release"]
                    if all(requests.get(h + "/_hotplate/release", timeout=5).json().get("release") == release
                           for h in self.hosts):
                        return
            except Exception:
                pass
            time.sleep(0.05)
        raise SystemExit(f"{commit[:12]} did not reach every host within {timeout:g}s")

    def note_passed(self) -> None:
        """Releases that passed their gate on some host (each host's history)."""
        for host in self.controllers:
            try:
                self.passed |= {r["release"] for r in self.get(host, "/api/releases") if r.get("passed")}
            except (requests.RequestException, ValueError, OSError, TypeError):
                pass

    def deploys(self, change) -> None:
        """RUNS commits, each made by ``change(run)``, with the leader killed during KILLS."""
        for run in range(1, RUNS + 1):
            change(run)
            git(self.app, "-c", "user.email=b@example.com", "-c", "user.name=b", "commit", "-qam", f"v{run}")
            if run in KILLS:
                self.kill_leader()
            self.everywhere()
            self.note_passed()

    def stop(self) -> None:
        self.stopping.set()
        self.supervisor.join()
        self.fleet.stop()


def under_load() -> None:
    """wrk through nginx while the trial's deploys and kills run."""
    with scratch() as tmp:
        app = make_app(tmp / "app")
        trial = Trial(tmp, app)
        try:
            trial.everywhere()
            spans = []
            stop_load = threading.Event()

            def load() -> None:
                while not stop_load.is_set():
                    spans.append(wrk(trial.lb + "m0", 10))

            loader = threading.Thread(target=load)
            loader.start()
            try:
                trial.deploys(lambda run: write_module(app, 0, f"v{run + 1}"))
            finally:
                stop_load.set()
                loader.join()
            trial.note_passed()
        finally:
            trial.stop()
        failed, unverified, answers = collections.Counter(), collections.Counter(), 0
        for line in (trial.fleet.root / "access.log").open():
            f = line.split()
            answers += 1
            if f[1] not in ("200", "499"):  # 499: wrk closing at its end
                failed[" ".join(f[1:4])] += 1
            elif f[1] == "200" and f[5] not in trial.passed:
                unverified[f[5]] += 1
    print(f"  leader kills: {', '.join(trial.killed)}; failed answers by status, host status and host: "
          f"{dict(failed) or 'none'}; unverified answers by release: {dict(unverified) or 'none'}")
    table(f"wrk -c32 through nginx in front of 3 hosts, {RUNS} fleet deploys, {len(KILLS)} leader kills",
          ["answers", "req/s", "failed", "socket errors", "unverified", "target"],
          [[answers, f"{sum(s['rps'] for s in spans) / len(spans):.0f}", sum(failed.values()),
            "; ".join(sorted({s["socket_errors"] for s in spans})), sum(unverified.values()),
            "0 failed, 0 unverified"]])


def websockets_across_deploys() -> None:
    """ws.CONNECTIONS connections spread over the fleet's 3 hosts, each
    sending a numbered message every 100 ms to an echo handler, while the
    trial's deploys (each changing the handler) and kills run."""
    with scratch() as tmp:
        app = tmp / "app"
        (app / "modules").mkdir(parents=True)
        (app / "modules" / "wsecho.c").write_bytes(ws.APP.read_bytes())
        ws.write_version(app, "v00")
        git(app, "init", "-q", "-b", "main")
        git(app, "add", "-A")
        git(app, "-c", "user.email=b@example.com", "-c", "user.name=b", "commit", "-q", "-m", "v00")
        trial = Trial(tmp, app)
        try:
            trial.everywhere()
            urls = [h.replace("http://", "ws://") + "/ws/bench" for h in trial.hosts]
            result = ws.run_clients(urls, ws.CONNECTIONS, 0.1,
                                    lambda: trial.deploys(lambda run: ws.write_version(app, f"v{run:02d}")))
        finally:
            trial.stop()
    table(f"{ws.CONNECTIONS} WebSocket connections over 3 hosts, 1 message / 100 ms each, {RUNS} fleet deploys, "
          f"{len(KILLS)} leader kills ({', '.join(trial.killed)})",
          ["connected", "dropped", "sent", "lost", "bad order/state", "rtt p99 ms", "versions seen", "target"],
          [[result["connected"], result["dropped"], result["sent"], result["lost"], result["bad"],
            f"{ws.p99_ms(result['rtt']):.1f}", len(result["versions"]), "0 dropped, 0 lost"]])


if __name__ == "__main__":
    main()
    under_load()
    websockets_across_deploys()
