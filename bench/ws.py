"""WebSocket connections across deploys, echo throughput, memory per idle connection.

1. Deploys under load: 1,000 connections on `hotplate up` (2 workers), each
   sending a numbered message every 100 ms to an echo handler that answers
   with its code version and the connection's message count (kept in the
   connection's state), for 5 s without deploys, then across 20 deploys that
   change the handler. Counts connections dropped, messages lost (no answer
   within 5 s), answers out of order or with a broken count, and the round
   trip p99 without and with deploys. The server's own handoff pause (old
   worker's last read to new worker's first) comes from its log. Targets: 0
   dropped, 0 lost, handoff pause p99 < 50 ms.
2. Echo throughput: 64 connections each sending as soon as the previous
   answer arrives, 3 x 5 s alternating, against one hotplate worker and,
   side by side, the `websockets` library's own asyncio echo server (one
   process).
3. Memory per idle connection: one worker's RSS before and after opening
   2,000 idle connections (kernel socket buffers are not in RSS).

Clients run in separate processes so that they do not share a core's
event loop with each other.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

from .common import ROOT, Up, free_port, git, median, rss_kb, scratch, start, stop, table

APP = ROOT / "tests" / "apps" / "wsecho.c"
MANIFEST = """\
modules:
  ws:
    source: modules/wsecho.c
    cflags: [-DVERSION="{version}"]
    routes:
      - {{path: /health, handler: health}}
    websockets:
      - {{path: "/ws/<room>", on_open: ws_open, on_message: ws_message, on_close: ws_close}}
"""
CLIENTS = 4  # client processes
CONNECTIONS = 1000
IDLE_CONNECTIONS = 2000  # on one worker
DEPLOYS = 20
ROUNDS = 3


def write_version(work: Path, version: str) -> None:
    (work / "deploy.yaml").write_text(MANIFEST.format(version=version))


async def _talk(url: str, n: int, stop_at, ready, interval: float | None) -> dict:
    """n connections; each sends every ``interval`` s (0: as fast as answers
    come, None: never) until ``stop_at`` is set."""
    import websockets
    stats = {"connected": 0, "dropped": 0, "sent": 0, "answered": 0, "lost": 0, "bad": 0, "rtt": [],
             "versions": set()}
    clients = []
    for _ in range(n):
        clients.append(await websockets.connect(url, max_queue=None, ping_interval=None))
        await clients[-1].recv()
        stats["connected"] += 1
    await asyncio.to_thread(ready.wait)

    async def one(ws):
        count = 0
        if interval is None:
            while not stop_at.is_set():
                await asyncio.sleep(0.1)
            return
        await asyncio.sleep(random.random() * interval)
        while not stop_at.is_set():
            count += 1
            sent = time.monotonic()
            try:
                await ws.send(f"n{count}")
                stats["sent"] += 1
                version, seen, number = (await asyncio.wait_for(ws.recv(), 5)).split()
            except asyncio.TimeoutError:
                stats["lost"] += 1
                return
            except websockets.ConnectionClosed:
                stats["dropped"] += 1
                return
            stats["rtt"].append(time.monotonic() - sent)
            stats["answered"] += 1
            stats["versions"].add(version)
            if int(seen) != count or number != f"n{count}":
                stats["bad"] += 1
            if interval:
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - sent)))

    await asyncio.gather(*(one(ws) for ws in clients))
    for ws in clients:
        await ws.close()
    return stats


def client(url: str, n: int, stop_at, ready, interval: float | None, out) -> None:
    out.put(asyncio.run(_talk(url, n, stop_at, ready, interval)))


def run_clients(url: str | list[str], n: int, interval: float | None, during) -> dict:
    """Open n connections over CLIENTS processes (to the URLs in turn, given
    several: hosts of a fleet), then talk while ``during()`` runs; merge their stats."""
    urls = [url] if isinstance(url, str) else url
    ctx = multiprocessing.get_context("fork")
    stop_at, ready, out = ctx.Event(), ctx.Barrier(CLIENTS + 1), ctx.Queue()
    procs = [ctx.Process(target=client, args=(urls[i % len(urls)], n // CLIENTS, stop_at, ready, interval, out))
             for i in range(CLIENTS)]
    for p in procs:
        p.start()
    ready.wait(timeout=120)
    during()
    stop_at.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    merged = {k: sum(r[k] for r in results) for k in ("connected", "dropped", "sent", "answered", "lost", "bad")}
    merged["rtt"] = sorted(x for r in results for x in r["rtt"])
    merged["versions"] = set().union(*(r["versions"] for r in results))
    return merged


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def p99_ms(values: list[float]) -> float:
    return values[int(len(values) * 0.99)] * 1000 if values else float("nan")


def deploys_under_load(tmp: Path, connections: int = CONNECTIONS, interval: float = 0.1,
                       deploys: int = DEPLOYS) -> None:
    up = Up(tmp, "--bake", "0")
    try:
        work = tmp / "app"
        (work / "modules").mkdir(parents=True)
        (work / "modules" / "wsecho.c").write_bytes(APP.read_bytes())
        write_version(work, "v00")
        git(work, "init", "-q", "-b", "main")
        git(work, "-c", "user.email=b@example.com", "-c", "user.name=b", "commit", "-q", "--allow-empty", "-m", "x")
        git(work, "remote", "add", "origin", str(up.layout.repo))

        def push(version: str) -> None:
            write_version(work, version)
            git(work, "add", "-A")
            git(work, "-c", "user.email=b@example.com", "-c", "user.name=b", "commit", "-q", "-m", version)
            out = subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, capture_output=True, text=True)
            if "deploy succeeded" not in out.stderr:
                raise SystemExit(f"deploy {version} failed:\n{out.stderr}")

        push("v00")
        url = up.url.replace("http://", "ws://") + "/ws/bench"
        quiet = run_clients(url, connections, interval, lambda: time.sleep(8))
        log = up.layout.server_log
        mark = len(log.read_text())
        started = time.monotonic()
        loaded = run_clients(url, connections, interval, lambda: [push(f"v{i:02d}") or time.sleep(0.5)
                                                                  for i in range(1, deploys + 1)])
        seconds = time.monotonic() - started
        pauses = re.findall(r"(\d+) connections arrived; handoff pause p50 ([\d.]+) ms, p99 ([\d.]+) ms, "
                            r"max ([\d.]+) ms, (\d+) over 50 ms", log.read_text()[mark:])
    finally:
        up.stop()
    moved = sum(int(p[0]) for p in pauses)
    table(f"{connections} connections x 1 message / {interval * 1000:.0f} ms, {deploys} deploys in {seconds:.0f} s "
          "(2 workers)",
          ["run", "connected", "dropped", "sent", "lost", "bad order/state", "rtt p99 ms", "versions seen"],
          [[name, r["connected"], r["dropped"], r["sent"], r["lost"], r["bad"], f"{p99_ms(r['rtt']):.1f}",
            len(r["versions"])] for name, r in (("no deploys (8 s)", quiet), (f"{deploys} deploys", loaded))])
    over = sum(int(p[4]) for p in pauses)
    print(f"  server-side handoff pause over {moved} moves in {len(pauses)} bursts: median burst p50 "
          f"{median(float(p[1]) for p in pauses):.1f} ms, worst burst p99 {max(float(p[2]) for p in pauses):.1f} ms, "
          f"max {max(float(p[3]) for p in pauses):.1f} ms; {over} over 50 ms ({over / moved:.2%}: p99 "
          f"{'<' if over / moved < 0.01 else '>='} 50 ms, the target)")


def echo_server_hotplate(tmp: Path) -> tuple[subprocess.Popen, str]:
    app = tmp / "echo"
    (app / "modules").mkdir(parents=True)
    (app / "modules" / "wsecho.c").write_bytes(APP.read_bytes())
    write_version(app, "v1")
    port = free_port()
    proc = start([sys.executable, "-m", "hotplate.controller.cli", "serve", str(app), "--state", str(tmp / "echo-state"),
                  "--bind", f"127.0.0.1:{port}", "--workers", "1"], f"http://127.0.0.1:{port}/health",
                 tmp / "echo.log")
    return proc, f"ws://127.0.0.1:{port}/ws/bench"


PY_ECHO = """
import asyncio, sys
from websockets.asyncio.server import serve
count = 0
async def echo(ws):
    global count
    await ws.send("hello v1 x y")
    async for m in ws:
        count += 1
        await ws.send(f"v1 {m[1:]} {m}")
async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), ping_interval=None):
        await asyncio.Future()
asyncio.run(main())
"""


def throughput(tmp: Path) -> None:
    proc, url = echo_server_hotplate(tmp)
    port = free_port()
    py = subprocess.Popen([sys.executable, "-c", PY_ECHO, str(port)])
    rates: dict[str, list[float]] = {"hotplate": [], "websockets": []}
    p99: dict[str, list[float]] = {"hotplate": [], "websockets": []}
    cpu: dict[str, list[float]] = {"hotplate": [], "websockets": []}
    try:
        time.sleep(1)
        worker = next((tmp / "echo-state" / "run" / "workers").glob("*.json")).stem
        pids = {"hotplate": int(worker), "websockets": py.pid}
        for _ in range(ROUNDS):  # alternating, so that noise hits both alike
            for name, target in (("hotplate", url), ("websockets", f"ws://127.0.0.1:{port}/")):
                used = {}

                def window():
                    used["before"] = cpu_seconds(pids[name])
                    time.sleep(5)
                    used["after"] = cpu_seconds(pids[name])

                r = run_clients(target, 64, 0, window)
                rates[name].append(r["answered"] / 5)
                p99[name].append(p99_ms(r["rtt"]))
                cpu[name].append((used["after"] - used["before"]) / max(r["answered"], 1) * 1e6)
        before = rss_kb(int(worker))
        idle = {}

        def measure():
            time.sleep(1)
            idle["after"] = rss_kb(int(worker))

        run_clients(url, IDLE_CONNECTIONS, None, measure)
    finally:
        stop(proc)
        py.terminate()
        py.wait()
    table(f"Echo throughput, 64 connections, one message in flight each, median of {ROUNDS} x 5 s, alternating",
          ["server", "messages/s", "range", "rtt p99 ms", "server CPU us/message"],
          [[label, f"{median(rates[name]):.0f}", f"{min(rates[name]):.0f}-{max(rates[name]):.0f}",
            f"{median(p99[name]):.1f}", f"{median(cpu[name]):.1f}"]
           for name, label in (("hotplate", "hotplate, 1 worker, C echo handler"),
                               ("websockets", "websockets library, 1 process, Python echo"))])
    print(f"  ratio hotplate / websockets: {median(rates['hotplate']) / median(rates['websockets']):.2f} in "
          f"messages/s, {median(cpu['websockets']) / median(cpu['hotplate']):.2f} in CPU per message (the "
          f"{CLIENTS} client processes share the 2 cores with the server, so messages/s is bound by them)")
    table("Memory per idle connection (one worker's RSS)", ["connections", "RSS before KiB", "RSS after KiB",
                                                              "per connection KiB"],
          [[IDLE_CONNECTIONS, before, idle["after"], f"{(idle['after'] - before) / IDLE_CONNECTIONS:.1f}"]])


def main() -> None:
    """All three by default; ``--scale N`` runs only the deploys with N
    connections sending once a second (e.g. 4000: 2,000 per worker)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, help="connections for a deploys-only run, one message a second each")
    args = parser.parse_args()
    with scratch() as tmp:
        if args.scale:
            deploys_under_load(tmp, args.scale, 1.0, 5)
            return
        throughput(tmp)
        deploys_under_load(tmp)


if __name__ == "__main__":
    main()
