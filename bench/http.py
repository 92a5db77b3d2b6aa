"""C route vs the same route as a plain Flask view, same gunicorn settings.

Both servers run at once (gthread, 2 workers x 8 threads); wrk hits them in
alternation, ROUNDS times each, and the medians are compared. Target: the C
route at >= 1.5x the Flask view's requests per second.
Also: cold and warm build time of the demo app.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from hotplate.controller.deploy import build_release
from hotplate.controller.state import State

from .common import ROOT, free_port, median, scratch, start, stop, table, wrk

ROUNDS = 3
SECONDS = 5
GUNICORN = ["-k", "gthread", "-w", "2", "--threads", "8", "--no-control-socket"]


def bench_requests(tmp: Path) -> None:
    c_port, flask_port = free_port(), free_port()
    hotplate = start([sys.executable, "-m", "hotplate.controller.cli", "serve", str(ROOT), "--state", str(tmp / "state"),
                      "--bind", f"127.0.0.1:{c_port}", "--workers", "2", "--threads", "8"],
                     f"http://127.0.0.1:{c_port}/hello", tmp / "hotplate.log")
    flask = start([sys.executable, "-m", "gunicorn", *GUNICORN, "-b", f"127.0.0.1:{flask_port}", "bench.flask_app:app"],
                  f"http://127.0.0.1:{flask_port}/hello", tmp / "flask.log")
    runs = {"C module (hotplate)": [], "Flask view": []}
    try:
        for _ in range(ROUNDS):
            runs["C module (hotplate)"].append(wrk(f"http://127.0.0.1:{c_port}/hello", SECONDS))
            runs["Flask view"].append(wrk(f"http://127.0.0.1:{flask_port}/hello", SECONDS))
    finally:
        stop(hotplate)
        stop(flask)
    rows = []
    for name, results in runs.items():
        rows.append([name, f"{median(r['rps'] for r in results):.0f}", f"{median(r['p99_ms'] for r in results):.2f}",
                     sum(r["non2xx"] for r in results), results[0]["socket_errors"]])
    ratio = median(r["rps"] for r in runs["C module (hotplate)"]) / median(r["rps"] for r in runs["Flask view"])
    table(f"GET /hello, wrk -t2 -c32 keep-alive, median of {ROUNDS} x {SECONDS}s, alternating",
          ["server", "req/s", "p99 ms", "non-2xx", "socket errors"], rows)
    print(f"  ratio C/Flask: {ratio:.2f}x (target >= 1.5x): {'MET' if ratio >= 1.5 else 'NOT MET'}")


def bench_build(tmp: Path) -> None:
    app = tmp / "app"
    shutil.copytree(ROOT / "modules", app / "modules")
    shutil.copy(ROOT / "deploy.yaml", app / "deploy.yaml")
    rows = []
    for label, state in (("cold (empty cache)", "s1"), ("warm (cache hit)", "s1"), ("warm, new checkout", "s2")):
        if state == "s2":
            shutil.copytree(tmp / "s1" / "cache", tmp / "s2" / "cache")
        start_t = time.monotonic()
        outcome = build_release(app, State(tmp / state))
        rows.append([label, f"{(time.monotonic() - start_t) * 1000:.0f}", outcome.build.compiled,
                     len(outcome.build.modules)])
    table("Build of the demo app (validate + compile + release + smoke check)",
          ["build", "ms", "compiled", "modules"], rows)


def main() -> None:
    with scratch() as tmp:
        bench_build(tmp)
        bench_requests(tmp)


if __name__ == "__main__":
    main()
