"""Background jobs (hp_job_start): how long a queued job waits before it
runs, and until it has ended, for a job that does nothing.

One worker, the job runner at its default (2 at once); 50 jobs one after
another, each started by a request and waited for. The times are the jobs
database's own (created, started, finished): the runner claims a job
within its 50 ms poll, then forks a process that loads the release.
"""
from __future__ import annotations

import contextlib
import sqlite3
import statistics
import time

import requests

from .common import one_module_app, scratch, serve, stop, table

JOBS = 50

MODULE = r"""
#include <hotplate.h>
HP_MODULE;
HP_EXPORT int nothing(hp_job *job, const void *arg, size_t len) { return HP_OK; }
HP_EXPORT int start(hp_request *req, hp_response *res) {
    const char *id = hp_job_start(req, "nothing", "", 0);
    return id ? hp_res_printf(res, "%s", id) : HP_ERROR;
}
HP_EXPORT int state(hp_request *req, hp_response *res) {
    hp_job_info info;
    return hp_res_printf(res, "%s", hp_job_status(req, hp_req_query(req, "id"), &info) == HP_OK ? info.state
                                                                                                : "unknown");
}
"""
MANIFEST = """
modules:
  j:
    source: j.c
    routes:
      - {path: /start, methods: [POST], handler: start}
      - {path: /state, handler: state}
"""


def main() -> None:
    with scratch() as tmp:
        app = one_module_app(tmp / "app", MANIFEST, "j.c", MODULE)
        proc, url = serve(app, tmp / "state", "state?id=0", tmp / "serve.log")
        try:
            for _ in range(JOBS):
                job = requests.post(url + "start", timeout=5).text
                deadline = time.monotonic() + 30
                while requests.get(url + "state", params={"id": job}, timeout=5).text != "succeeded":
                    if time.monotonic() > deadline:
                        raise SystemExit(f"job {job} did not end; see {tmp / 'serve.log'}")
            with contextlib.closing(sqlite3.connect(tmp / "state" / "data" / "jobs.db")) as db:
                rows = db.execute("SELECT started - created, finished - created FROM jobs").fetchall()
        finally:
            stop(proc)

    def row(name, values):
        ms = sorted(v * 1000 for v in values)
        return [name, f"{statistics.median(ms):.0f}", f"{ms[int(len(ms) * 0.9)]:.0f}", f"{ms[-1]:.0f}"]
    table(f"a job that does nothing, {JOBS} one after another, ms from hp_job_start",
          ["until", "median", "p90", "max"],
          [row("it runs (claimed)", [r[0] for r in rows]), row("it has ended", [r[1] for r in rows])])


if __name__ == "__main__":
    main()
