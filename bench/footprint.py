"""The footprint of a running instance (issue 23): PSS of the controller,
the gunicorn master, its one worker and the job runner, for an app of one
module without jobs, idle after its deploy and after 1,000 requests.
Target: controller + master + worker <= 48 MB PSS, and no job runner for an
app without jobs (the master's first runner exits once idle: measured after
it has, and after the controller's git processes have ended at rest).
``--jobs 0`` is measured beside the default.
"""
from __future__ import annotations

import time
from pathlib import Path

import requests

from .common import Up, git, make_app, scratch, table

TARGET_MB = 48


#: The processes of an instance, by role. The controller's helpers are
#: whatever it keeps running beside it (GitPython's `git cat-file`).
ROLES = ("controller", "controller's helpers", "master", "worker", "job runner")


def pss_kb(pid: int) -> int:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except FileNotFoundError:  # (exited meanwhile: a helper that was done)
        return 0
    for line in rollup.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # (a thread that ended meanwhile)
            pass
    return found


def processes(up: Up) -> dict[str, list[int]]:
    """The instance's processes by role."""
    master = up.server_pid()
    roles = {"controller": [up.proc.pid], "controller's helpers": [p for p in children(up.proc.pid) if p != master],
             "master": [master], "worker": [], "job runner": []}
    for pid in children(master):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:  # (exited meanwhile: a runner going idle)
            continue
        roles["job runner" if b"hotplate.server.jobs" in cmdline else "worker"].append(pid)
    return roles


def measure(up: Up) -> dict[str, float]:
    return {role: sum(pss_kb(p) for p in pids) / 1024 for role, pids in processes(up).items()}


def deployed(up: Up, work: Path) -> None:
    sha = git(work, "rev-parse", "HEAD")
    git(Path(str(up.layout.repo)), "fetch", "-q", str(work), f"+{sha}:refs/heads/main")
    up.sync()
    deadline = time.monotonic() + 60
    while (s := up.status())["live"]["commit"] != sha or s["state"] != "Synced":
        if time.monotonic() > deadline:
            raise SystemExit(f"the deploy did not finish: {s}")
        time.sleep(0.05)
    while len(processes(up)["worker"]) != 1 and time.monotonic() < deadline:  # the old generation gone
        time.sleep(0.05)


def main() -> None:
    rows = []
    for label, extra in (("default", ()), ("--jobs 0", ("--jobs", "0"))):
        with scratch() as tmp:
            up = Up(tmp, "--bake", "0", *extra, workers=1)
            try:
                work = make_app(tmp / "app", modules=1)
                deployed(up, work)
                time.sleep(1)  # what the deploy left settles (no condition to wait for: memory)
                deadline = time.monotonic() + 30
                for role, why in (("job runner", "the one the master starts at boot, until it is idle"),
                                  ("controller's helpers", "GitPython's, until no object is read for a while")):
                    while processes(up)[role]:  # (at rest: what ends by itself)
                        if time.monotonic() > deadline:
                            raise SystemExit(f"the {role} ({why}) did not exit within 30 s")
                        time.sleep(0.1)
                idle = measure(up)
                with requests.Session() as s:
                    for _ in range(1000):
                        s.get(up.url + "/m0", timeout=5).raise_for_status()
                busy = measure(up)
            finally:
                up.stop()
        for when, mb in (("idle", idle), ("after 1,000 requests", busy)):
            core = mb["controller"] + mb["controller's helpers"] + mb["master"] + mb["worker"]
            rows.append([label, when, *(f"{mb[r]:.1f}" for r in ROLES), f"{core:.1f}",
                         "MET" if core <= TARGET_MB and not mb["job runner"] else "NOT MET"])
    table(f"PSS in MB, one worker, an app of one module without jobs (target: controller, its helpers, master "
          f"and worker <= {TARGET_MB} MB, no job runner)", ["server", "when", *ROLES, "total", "target"], rows)


if __name__ == "__main__":
    main()
