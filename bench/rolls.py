"""Zero downtime: steady keep-alive load (wrk -c32) across 20 deploys.

Three runs of the same length on the same server, one after another:
no deploys (the baseline), 20 hotplate deploys (git push, one module
changed, each rolled make-before-break), and 20 plain gunicorn SIGHUPs to
the same server's master. Target for the deploys: 0 socket errors, 0 non-2xx,
and throughput >= 80% of the baseline. The deploys' compiles, git and hook
processes share the 2 cores with wrk and the server; that cost is counted.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from .common import Up, git, make_app, scratch, table, write_module, wrk

SECONDS = 20
EVENTS = 20
ROUNDS = 2


def spaced(action) -> threading.Thread:
    """Run ``action(i)`` EVENTS times, evenly spread over the wrk run."""
    def run():
        start = time.monotonic()
        for i in range(EVENTS):
            time.sleep(max(0.0, start + (i + 0.5) * SECONDS / (EVENTS + 1) - time.monotonic()))
            action(i)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def main() -> None:
    with scratch() as tmp:
        up = Up(tmp, "--bake", "0")
        work = make_app(tmp / "app")
        git(work, "remote", "add", "origin", str(up.layout.repo))
        git(work, "push", "-q", "origin", "main")
        url = f"{up.url}/m0"
        runs: dict[str, list[dict]] = {"no deploys": [], f"{EVENTS} hotplate deploys": [],
                                       f"{EVENTS} plain gunicorn HUPs": []}
        deployed = 0

        def deploy(i):
            write_module(work, 1, f"d{len(runs['no deploys'])}-{i}")
            git(work, "commit", "-q", "-am", f"deploy {i}")
            subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, capture_output=True, check=True)

        try:
            for _ in range(ROUNDS):  # alternate, so that machine noise hits every kind of run
                runs["no deploys"].append(wrk(url, SECONDS))
                thread = spaced(deploy)
                runs[f"{EVENTS} hotplate deploys"].append(wrk(url, SECONDS))
                thread.join()
                deployed += sum(d["outcome"] == "succeeded" for d in up.deploys(EVENTS))
                thread = spaced(lambda i: os.kill(up.server_pid(), signal.SIGHUP))
                runs[f"{EVENTS} plain gunicorn HUPs"].append(wrk(url, SECONDS))
                thread.join()
        finally:
            up.stop()
    results = {name: {"rps": sum(r["rps"] for r in rs) / len(rs), "p99_ms": max(r["p99_ms"] for r in rs),
                      "non2xx": sum(r["non2xx"] for r in rs),
                      "socket_errors": "; ".join(sorted({r["socket_errors"] for r in rs}))}
               for name, rs in runs.items()}
    base = results["no deploys"]["rps"]
    table(f"GET /m0 under wrk -t2 -c32 keep-alive, {ROUNDS} rounds of {SECONDS}s per kind of run, 2 workers "
          "(req/s: mean; p99: worst)",
          ["run", "req/s", "vs no deploys", "p99 ms", "non-2xx", "socket errors"],
          [[name, f"{r['rps']:.0f}", f"{r['rps'] / base * 100:.0f}%", f"{r['p99_ms']:.1f}", r["non2xx"],
            r["socket_errors"]] for name, r in results.items()])
    print(f"  deploys that succeeded during the runs: {deployed} of {ROUNDS * EVENTS}")


if __name__ == "__main__":
    main()
