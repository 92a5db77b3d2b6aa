"""Streamed responses (hp_res_stream): throughput and the worker's memory,
against the same handler buffering its whole response, side by side in one
run.

One worker; a handler writes N MiB in 64 KiB blocks; curl downloads it on
loopback (to /dev/null). The worker's peak RSS is sampled from /proc while
it runs.
"""
from __future__ import annotations

import subprocess
import threading

import requests

from .common import median, one_module_app, scratch, serve, stop, table

MIB = 200
RUNS = 3

MODULE = r"""
#include <hotplate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
HP_MODULE;
static char block[64 * 1024];
/* GET /?mb=N[&stream=1] */
HP_EXPORT int run(hp_request *req, hp_response *res) {
    long mb = atol(hp_req_query(req, "mb") ?: "1");
    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    hp_res_header(res, "X-Worker", pid);
    if (hp_req_query(req, "stream"))
        hp_res_stream(res);
    memset(block, 'x', sizeof block);
    for (long i = 0; i < mb * 16; i++)
        if (hp_res_write(res, block, sizeof block) != HP_OK)
            return HP_ERROR;
    return HP_OK;
}
"""
MANIFEST = """
modules:
  s:
    source: s.c
    routes:
      - {path: /, handler: run, timeout: 120}
"""


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmRSS"))) * 1024


def download(url: str, pid: int) -> tuple[float, int]:
    """MiB/s by curl, and the worker's peak RSS growth in MiB meanwhile."""
    base, peak, done = rss(pid), [0], threading.Event()

    def sample():
        while not done.wait(0.01):
            peak[0] = max(peak[0], rss(pid))
    t = threading.Thread(target=sample)
    t.start()
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}", url],
                         capture_output=True, text=True, check=True).stdout
    done.set()
    t.join()
    return float(out) / 2 ** 20, max(0, peak[0] - base) >> 20


def main() -> None:
    with scratch() as tmp:
        app = one_module_app(tmp / "app", MANIFEST, "s.c", MODULE)
        proc, url = serve(app, tmp / "state", "?mb=0", tmp / "serve.log")
        try:
            pid = int(requests.get(url + "?mb=0", timeout=5).headers["X-Worker"])
            results = {"streamed": [], "buffered": []}
            for _ in range(RUNS):  # alternating
                results["streamed"].append(download(f"{url}?mb={MIB}&stream=1", pid))
                results["buffered"].append(download(f"{url}?mb={MIB}", pid))
        finally:
            stop(proc)
    rows = [[name, f"{median(r[0] for r in runs):,.0f}", f"{max(r[1] for r in runs)}"]
            for name, runs in results.items()]
    table(f"a {MIB} MiB response from one handler, curl on loopback (median of {RUNS}, alternating)",
          ["response", "MiB/s", "worker RSS growth, MiB (max)"], rows)


if __name__ == "__main__":
    main()
