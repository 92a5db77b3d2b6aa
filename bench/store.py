"""The shared key-value store (hp_kv_*) from a handler: operations per
second one worker gets, LMDB and Redis side by side in one run.

A module's handler times a loop of N calls (clock_gettime around it, so the
HTTP request is not counted): set, get, incr, each on 1,000 keys of 64-byte
values. Redis is a redis-server of the bench's own on loopback. Target: LMDB
>= 200,000 ops/s from one worker.
"""
from __future__ import annotations

import shutil
import subprocess

import requests

from .common import free_port, median, one_module_app, scratch, serve, stop, table

OPS = 200_000
RUNS = 3
TARGET = 200_000

MODULE = r"""
#include <hotplate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
HP_MODULE;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

/* GET /?op=set|get|incr&n=N: N calls, answered with ops per second */
HP_EXPORT int run(hp_request *req, hp_response *res) {
    const char *op = hp_req_query(req, "op");
    long n = atol(hp_req_query(req, "n") ?: "1000");
    char key[32], value[64];
    memset(value, 'v', sizeof value);
    double t0 = now();
    for (long i = 0; i < n; i++) {
        snprintf(key, sizeof key, "bench:%ld", i % 1000);
        const void *got; size_t len; int rc;
        if (!strcmp(op, "set")) rc = hp_kv_set(key, value, sizeof value, 0);
        else if (!strcmp(op, "get")) rc = hp_kv_get(req, key, &got, &len);
        else rc = hp_kv_incr("bench:counter", 1, NULL);
        if (rc != HP_KV_OK) { hp_res_status(res, 500); return hp_res_printf(res, "%s\n", hp_kv_error()); }
    }
    return hp_res_printf(res, "%.0f\n", n / (now() - t0));
}
"""
MANIFEST = """
modules:
  kv:
    source: kv.c
    routes:
      - {path: /, handler: run, timeout: 120}
"""


def measure(url: str, op: str, ops: int) -> float:
    r = requests.get(url, params={"op": op, "n": ops}, timeout=300)
    r.raise_for_status()
    return float(r.text)


def main() -> None:
    with scratch() as tmp:
        app = one_module_app(tmp / "app", MANIFEST, "kv.c", MODULE)
        rport = free_port()
        redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(rport), "--bind",
                                  "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                                 stdout=subprocess.DEVNULL)
        stores = {"lmdb": None, "redis": f"redis://127.0.0.1:{rport}/0"}
        rows, results = [], {}
        try:
            for name, store in stores.items():
                proc, url = serve(app, tmp / f"state-{name}", "?op=get&n=0", tmp / f"{name}.log",
                                  *(["--store", store] if store else []))
                try:
                    ops = OPS if name == "lmdb" else OPS // 20  # a round trip per call
                    measure(url, "set", 1000)  # every key exists before get
                    results[name] = {op: median(measure(url, op, ops) for _ in range(RUNS))
                                     for op in ("set", "get", "incr")}
                finally:
                    stop(proc)
        finally:
            redis.terminate()
            redis.wait(timeout=10)
    for op in ("set", "get", "incr"):
        lm, rd = results["lmdb"][op], results["redis"][op]
        rows.append([op, f"{lm:,.0f}", f"{rd:,.0f}", f"{lm / rd:.0f}x", "yes" if lm >= TARGET else "NO"])
    table(f"hp_kv_* from one handler, ops/s (median of {RUNS}; target LMDB >= {TARGET:,})",
          ["op", "LMDB", "Redis (loopback)", "LMDB/Redis", "LMDB meets target"], rows)


if __name__ == "__main__":
    main()
