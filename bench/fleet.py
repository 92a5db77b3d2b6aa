"""Fleet benchmarks. Push to live on every host: a leader and two followers
on loopback with a registry of the bench's own (Debian's docker-registry),
either followers polling the registry every 0.2 s (`--publish`/`--follow`)
or an etcd fleet rolling out in waves (`--fleet`). A 10-module app; 10
commits that each change one module; the clock runs from the push (or the
commit and its `hotplate sync`) to the new text answering on all three hosts
(polled every 5 ms). Target: <= 1.5 s. Then ``hotplate fleet up``'s fleet (etcd, registry, NATS,
3 hosts, nginx): wrk -c32 through nginx while 10 commits deploy across it.
Target: 0 failed requests.
"""
from __future__ import annotations

import collections
import threading
import time

import requests

from hotplate.controller import localfleet
from hotplate.controller.localfleet import LocalFleet
from hotplate.controller.registry import RegistrySource

from . import ws

from .common import Up, free_port, git, make_app, median, scratch, stop, table, write_module, wrk

RUNS = 10
TARGET_S = 1.5


def main() -> None:
    """Push to live on all 3 hosts, three ways side by side: followers polling
    the registry's `live` tag, and the etcd fleet rolling out in waves of 1
    and of 2 after the canary."""
    rows = []
    for name, extra in (("registry (--follow, no waves)", None), ("fleet, waves of 1", "1"),
                        ("fleet, waves of 2", "2")):
        ms = sorted(t * 1000 for t in push_to_live(extra))
        rows.append([name, f"{median(ms):.0f}", f"{ms[int(len(ms) * 0.9) - 1]:.0f}", f"{ms[-1]:.0f}",
                     f"<= {TARGET_S * 1000:.0f}"])
    table(f"commit -> new text on all 3 hosts (leader + 2 followers), one module changed, {RUNS} runs, ms",
          ["mode", "median", "p90", "max", "target"], rows)


def push_to_live(wave_size: str | None) -> list[float]:
    """Seconds from each commit to its text on all three hosts. Without
    ``wave_size``: a leader hosting the repository (timed from `git push`)
    and followers polling the registry. With it: an etcd fleet whose leader
    mirrors the app (timed from the commit, `hotplate sync` as a webhook
    would) and rolls out in waves of that size."""
    with scratch() as tmp:
        reg, port = localfleet.registry(tmp)
        url = f"http://127.0.0.1:{port}/bench"
        app = make_app(tmp / "app")
        services = [reg]
        if wave_size is None:
            hosts = [Up(tmp / "leader", "--publish", url, "--bake", "0")]
            git(app, "remote", "add", "origin", str(hosts[0].state / "repo.git"))
            follow = ("--follow", url, "--poll", "0.2", "--bake", "0")
        else:
            proc, etcd_port = localfleet.etcd(tmp)
            services.append(proc)
            fleet = ("--fleet", f"etcd://127.0.0.1:{etcd_port}")
            hosts = [Up(tmp / "leader", str(app), "--publish", url, *fleet, "--host-name", "a", "--poll", "60",
                        "--bake", "0", "--wave-size", wave_size)]
            follow = ("--follow", url, *fleet, "--poll", "0.2", "--bake", "0")
        hosts += [Up(tmp / f"f{i}", *follow, *(("--host-name", f"f{i}") if wave_size else ())) for i in range(2)]
        took = []
        try:
            for run in range(RUNS + 1):  # the first deploy builds everything: not timed
                version = f"v{run + 2}"
                if run:
                    write_module(app, run % 10, version)
                    git(app, "commit", "-qam", version)
                started = time.monotonic()
                if wave_size is None:
                    git(app, "push", "-q", "origin", "main")
                else:
                    hosts[0].sync()
                want = f"m{run % 10} {version}\n" if run else "m0 v1\n"
                path = f"/m{run % 10}" if run else "/m0"
                wait_text(hosts[0].url + path, want, every=[h.url + path for h in hosts[1:]], poll=0.005)
                if run:
                    took.append(time.monotonic() - started)
        finally:
            for h in hosts:
                h.stop()
            for proc in services:
                stop(proc)
    return took


def under_load() -> None:
    """wrk -c32 through the fleet's nginx while 10 commits deploy: failed requests."""
    with scratch() as tmp:
        app = make_app(tmp / "app")
        fleet = LocalFleet(tmp / "fleet", str(app), hosts=3, port=free_port()).start()
        lb = fleet.urls["load balancer"]
        try:
            hosts = [f"http://127.0.0.1:{p}/m0" for p in fleet.apps]
            wait_text(lb + "m0", "m0 v1\n", every=hosts)  # every host serves before the load starts
            result = {}
            load = threading.Thread(target=lambda: result.update(wrk(lb + "m0", 40)))
            load.start()
            for run in range(1, RUNS + 1):
                write_module(app, 0, f"v{run + 1}")
                git(app, "commit", "-qam", f"v{run + 1}")
                wait_text(lb + "m0", f"m0 v{run + 1}\n", every=hosts)
            load.join()
        finally:
            fleet.stop()
        failed = collections.Counter(" ".join(line.split()[1:4]) for line in (fleet.root / "access.log").open()
                                     if line.split()[1] not in ("200", "499"))  # 499: wrk closing at its end
    print(f"  failed answers by status, host status and host: {dict(failed) or 'none'}")
    table(f"wrk -c32 through nginx in front of 3 hosts while {RUNS} commits deploy across the fleet",
          ["req/s", "non-2xx", "socket errors", "target"],
          [[f"{result['rps']:.0f}", result["non2xx"], result["socket_errors"], "0 failed"]])


def wait_text(url: str, text: str, every: list[str] = (), timeout: float = 120, poll: float = 0.05) -> None:
    """Wait until url, then each of every, answers text."""
    deadline = time.monotonic() + timeout
    for u in [url, *every]:
        while True:
            try:
                if requests.get(u, timeout=5).text == text:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{text.strip()} did not reach {u}")
            time.sleep(poll)


def websockets_across_deploys() -> None:
    """1,000 WebSocket connections spread over the 3 hosts of `hotplate fleet
    up`, each sending a numbered message every 100 ms to an echo handler,
    while 10 commits that change the handler deploy across the fleet."""
    with scratch() as tmp:
        app = tmp / "app"
        (app / "modules").mkdir(parents=True)
        (app / "modules" / "wsecho.c").write_bytes(ws.APP.read_bytes())
        ws.write_version(app, "v00")
        git(app, "init", "-q", "-b", "main")
        git(app, "add", "-A")
        git(app, "-c", "user.email=b@example.com", "-c", "user.name=b", "commit", "-q", "-m", "v00")
        fleet = LocalFleet(tmp / "fleet", str(app), hosts=3, port=free_port()).start()
        hosts = [f"http://127.0.0.1:{p}" for p in fleet.apps]
        live = RegistrySource(fleet.urls["registry"])

        def everywhere(version: str) -> None:
            """Until the leader published the commit and every host serves its release."""
            commit = git(app, "rev-parse", "HEAD")
            deadline = time.monotonic() + 120
            while True:
                try:
                    live.fetch()
                    if live.tip() == commit:
                        release = live.live["hotplate.release"]
                        if all(requests.get(h + "/_hotplate/release", timeout=5).json().get("release") == release
                               for h in hosts):
                            return
                except Exception:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{version} did not reach every host")
                time.sleep(0.05)

        def deploy(version: str) -> None:
            ws.write_version(app, version)
            git(app, "-c", "user.email=b@example.com", "-c", "user.name=b", "commit", "-qam", version)
            everywhere(version)

        try:
            everywhere("v00")
            urls = [h.replace("http://", "ws://") + "/ws/bench" for h in hosts]
            result = ws.run_clients(urls, ws.CONNECTIONS, 0.1, lambda: [deploy(f"v{i:02d}") for i in range(1, RUNS + 1)])
        finally:
            fleet.stop()
    table(f"{ws.CONNECTIONS} WebSocket connections over 3 hosts, 1 message / 100 ms each, {RUNS} fleet deploys",
          ["connected", "dropped", "sent", "lost", "bad order/state", "rtt p99 ms", "versions seen", "target"],
          [[result["connected"], result["dropped"], result["sent"], result["lost"], result["bad"],
            f"{ws.p99_ms(result['rtt']):.1f}", len(result["versions"]), "0 dropped, 0 lost"]])


if __name__ == "__main__":
    main()
    under_load()
    websockets_across_deploys()
