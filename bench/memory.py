"""Memory across deploys: RSS of the gunicorn master and of the controller
before and after N deploys (default 500). Target: no growth beyond noise.

Deploys alternate between two commits whose releases are cached (each one
still runs checkout, plan, build through the cache, release, roll), triggered
through the API, so the run measures the controller and server, not gcc.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import requests

from .common import Up, git, make_app, rss_kb, table, write_module


def main(deploys: int = 500) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        up = Up(tmp, "--bake", "0")
        try:
            work = make_app(tmp / "app")
            a = git(work, "rev-parse", "HEAD")
            write_module(work, 0, "v2")
            git(work, "commit", "-q", "-am", "v2")
            b = git(work, "rev-parse", "HEAD")
            token = (up.state / "token").read_text().strip()
            bare = str(up.state / "repo.git")

            def deploy(sha: str) -> None:
                git(Path(bare), "fetch", "-q", str(work), f"+{sha}:refs/heads/main")
                requests.post(up.api + "/api/sync", headers={"Authorization": f"Bearer {token}"}, timeout=5)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    s = up.status()
                    if s["live"]["commit"] == sha and s["state"] == "Synced":
                        return
                    time.sleep(0.02)
                raise SystemExit(f"deploy of {sha} did not finish: {s}")

            for sha in (a, b, a, b):  # warm up: caches, imports, first allocations
                deploy(sha)
            before = (rss_kb(up.server_pid()), rss_kb(up.proc.pid))
            start = time.monotonic()
            for i in range(deploys):
                deploy(a if i % 2 else b)
            seconds = time.monotonic() - start
            after = (rss_kb(up.server_pid()), rss_kb(up.proc.pid))
        finally:
            up.stop()
    table(f"RSS before and after {deploys} deploys ({seconds:.0f}s, {seconds / deploys * 1000:.0f} ms per deploy)",
          ["process", "before KiB", "after KiB", "growth KiB"],
          [["gunicorn master", before[0], after[0], after[0] - before[0]],
           ["controller (hotplate up)", before[1], after[1], after[1] - before[1]]])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
