"""Push-to-live: from `git push` starting to the new code answering on every worker.

A 10-module app on `hotplate up` with 1 worker, then with 2 (bake window 0:
the gate's bake runs after the code is live and does not delay it). Ten
one-module changes, then ten reverts (each tree was released before: the
release is recalled, with no checkout, plan or build; "-" for a stage
a deploy did not run). Push-to-live is the arrival of the push's `remote:
hotplate: live:` line, which the controller sends once every new worker
reports the new release and every old worker has stopped accepting
connections: from then on every fresh connection gets the new text.
Targets (issue 23): change <= 150 ms, revert <= 80 ms.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import requests

from .common import Up, git, make_app, median, scratch, table, write_module

RUNS = 10
STAGES = ("recall", "checkout", "plan", "build", "release", "roll")


def timed_push(work: Path) -> float:
    """Seconds from starting `git push` to the `live:` line reaching the pusher."""
    start = time.monotonic()
    proc = subprocess.Popen(["git", "push", "-q", "origin", "main"], cwd=work, stderr=subprocess.PIPE, text=True)
    live = None
    for line in proc.stderr:
        if live is None and "hotplate: live:" in line:
            live = time.monotonic() - start
        if "deploy FAILED" in line or "deploy ROLLED BACK" in line:
            raise SystemExit(f"deploy failed during the benchmark: {line}")
    proc.wait()
    if live is None:
        raise SystemExit("the push did not report a live deploy")
    return live


def main() -> None:
    rows = [row for workers in (1, 2) for row in measure(workers)]
    table(f"Push-to-live, 10-module app, median of {RUNS} (ms; stages from the deploy record)",
          ["deploy", "workers", "push-to-live", "min", "max", "before", *STAGES, "target"], rows)


def measure(workers: int) -> list[list]:
    with scratch() as tmp:
        up = Up(tmp, "--bake", "0", workers=workers)
        try:
            work = make_app(tmp / "app")
            git(work, "remote", "add", "origin", str(up.layout.repo))
            timed_push(work)
            change, revert = [], []
            for i in range(RUNS):
                write_module(work, i % 10, f"v{i + 2}")
                git(work, "commit", "-q", "-am", f"change m{i % 10}")
                change.append(timed_push(work))
                assert requests.get(f"{up.url}/m{i % 10}", timeout=5).text == f"m{i % 10} v{i + 2}\n"
            for i in range(RUNS):
                git(work, "revert", "--no-edit", "HEAD")
                revert.append(timed_push(work))
            rows = up.deploys(2 * RUNS)
        finally:
            up.stop()
    revert_rows, change_rows = rows[:RUNS][::-1], rows[RUNS:][::-1]  # (newest first: now in push order)
    assert all(all(m["cached"] for m in r["modules"]) for r in revert_rows), "reverts must not compile"

    def stage_cells(rs):
        return [f"{median(r['stages'][s] for r in rs) * 1000:.0f}" if all(s in r["stages"] for r in rs) else "-"
                for s in STAGES]

    def before(took, rs):
        """From git push to the deploy's start: receive-pack, the hook, the controller's wake-up."""
        return f"{median(t - sum(v for s, v in r['stages'].items() if s != 'gate') for t, r in zip(took, rs)) * 1000:.0f}"

    return [[what, workers, f"{median(took) * 1000:.0f}", f"{min(took) * 1000:.0f}", f"{max(took) * 1000:.0f}",
             before(took, records), *stage_cells(records), target]
            for what, took, records, target in (("one module changed", change, change_rows, "<= 150"),
                                                ("git revert (cached)", revert, revert_rows, "<= 80"))]


if __name__ == "__main__":
    main()
