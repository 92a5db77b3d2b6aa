"""Memory across deploys: RSS of the gunicorn master and of the controller
sampled across N deploys (default 500). Target: no growth beyond noise.

Deploys alternate between two commits whose releases are cached (each one
still runs checkout, plan, build through the cache, release, roll), triggered
through the API, so the run measures the controller and server, not gcc.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import requests

from .common import Up, git, make_app, rss_kb, scratch, table, write_module


def main(deploys: int = 500) -> None:
    with scratch() as tmp:
        up = Up(tmp, "--bake", "0")
        try:
            work = make_app(tmp / "app")
            a = git(work, "rev-parse", "HEAD")
            write_module(work, 0, "v2")
            git(work, "commit", "-q", "-am", "v2")
            b = git(work, "rev-parse", "HEAD")
            bare = str(up.layout.repo)

            def deploy(sha: str) -> None:
                git(Path(bare), "fetch", "-q", str(work), f"+{sha}:refs/heads/main")
                requests.post(up.api + "/api/sync", headers=up.auth(), timeout=5)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    s = up.status()
                    if s["live"]["commit"] == sha and s["state"] == "Synced":
                        return
                    time.sleep(0.02)
                raise SystemExit(f"deploy of {sha} did not finish: {s}")

            for sha in (a, b, a, b):  # warm up: caches, imports, first allocations
                deploy(sha)
            samples = [(0, rss_kb(up.server_pid()), rss_kb(up.proc.pid))]
            start = time.monotonic()
            for i in range(deploys):
                deploy(a if i % 2 else b)
                if (i + 1) % max(1, deploys // 5) == 0:
                    samples.append((i + 1, rss_kb(up.server_pid()), rss_kb(up.proc.pid)))
            seconds = time.monotonic() - start
        finally:
            up.stop()
    table(f"RSS (KiB) across {deploys} deploys ({seconds:.0f}s, {seconds / deploys * 1000:.0f} ms per deploy)",
          ["after deploys", "gunicorn master", "controller (hotplate up)"],
          [[n, master, controller] for n, master, controller in samples])
    first, last = samples[0], samples[-1]
    print(f"  growth: master {last[1] - first[1]} KiB, controller {last[2] - first[2]} KiB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
