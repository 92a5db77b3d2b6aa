"""Slow clients (slowloris) against the demo app: wrk -c32 on GET /hello
with 1,000 connections held open that never finish their headers, vs the
same run without them, alternating. Target: >= 90% of the throughput, 0
errors. The slow connections cost the workers a descriptor each, not a
thread (server/worker.py reads request heads on its main loop).
"""
from __future__ import annotations

import socket
import sys
from contextlib import contextmanager

from .common import ROOT, free_port, median, scratch, start, stop, table, wrk

ROUNDS = 3
SECONDS = 5
SLOW = 1000


@contextmanager
def slowloris(port: int, n: int):
    """n connections that send a partial request head and then nothing."""
    held = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            held.append(s)
        yield
    finally:
        for s in held:
            s.close()


def main() -> None:
    with scratch() as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}/hello"
        proc = start([sys.executable, "-m", "hotplate.controller.cli", "serve", str(ROOT), "--state",
                      str(tmp / "state"), "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "8"],
                     url, tmp / "serve.log")
        runs = {"alone": [], f"with {SLOW} slow clients": []}
        try:
            for _ in range(ROUNDS):
                runs["alone"].append(wrk(url, SECONDS))
                with slowloris(port, SLOW):  # dropped after header_timeout (10 s): longer than a run
                    runs[f"with {SLOW} slow clients"].append(wrk(url, SECONDS))
        finally:
            stop(proc)
    rows = [[name, f"{median(r['rps'] for r in rs):.0f}", f"{median(r['p99_ms'] for r in rs):.2f}",
             sum(r["non2xx"] for r in rs), rs[0]["socket_errors"]] for name, rs in runs.items()]
    names = list(runs)
    ratio = median(r["rps"] for r in runs[names[1]]) / median(r["rps"] for r in runs[names[0]])
    table(f"GET /hello, wrk -t2 -c32, 2 workers x 8 threads, median of {ROUNDS} x {SECONDS}s, alternating",
          ["run", "req/s", "p99 ms", "non-2xx", "socket errors"], rows)
    print(f"  with/without: {ratio:.0%} (target >= 90%): {'MET' if ratio >= 0.9 else 'NOT MET'}")


if __name__ == "__main__":
    main()
