"""The C fast path against nginx, Kore, the core driven by gunicorn and Flask (issues 10, 22, 23).

Five servers run at once on the same box: nginx and Kore 4.1 (Debian's,
2 workers each, answering the same 14 bytes; skipped if missing), hotplate with its fast
path (the default), hotplate with it off (``HOTPLATE_FAST_PATH=0``: the
same C core, fed connections by gunicorn's threads) and the same routes as Flask views under
gunicorn (gthread 2 x 8, like hotplate). wrk hits them in alternation,
ROUNDS times each; medians are compared.

- ``GET /hello`` at 32 keep-alive connections and at 1: target fast path
  >= 50% of nginx's requests per second in both;
- ``GET /heavy``, a JSON array of 1,000 objects built per request: target
  fast path >= 10x the Flask view;
- p99 latency at 32 connections: the fast path no worse than the driven core.

``BENCH_BASELINE=DIR`` adds the same two hotplate servers run from another
checkout, for a before/after in the same run: DIR holds it as
``DIR/hotplate`` (``git worktree add DIR/hotplate REV``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from .common import free_port, median, scratch, start, stop, table, wrk

ROUNDS = 3
SECONDS = 4
GUNICORN = ["-k", "gthread", "-w", "2", "--threads", "8", "--no-control-socket"]

MANIFEST = """\
modules:
  bench:
    source: bench.c
    routes:
      - {path: /hello, handler: hello}
      - {path: /heavy, handler: heavy}
"""
MODULE = r"""
#include <hotplate.h>
HP_MODULE;

HP_EXPORT int hello(hp_request *req, hp_response *res)
{
    return hp_res_write(res, "Hello, world!\n", 14);
}

/* The CPU-heavy route: 1,000 objects of four fields, as JSON. */
HP_EXPORT int heavy(hp_request *req, hp_response *res)
{
    hp_json *j = hp_res_json(res);
    hp_json_begin_array(j, NULL);
    for (int i = 0; i < 1000; i++) {
        hp_json_begin_object(j, NULL);
        hp_json_int(j, "id", i);
        hp_json_string(j, "name", "item");
        hp_json_double(j, "price", i * 1.25);
        hp_json_bool(j, "in_stock", i % 3 != 0);
        hp_json_end_object(j);
    }
    hp_json_end_array(j);
    return HP_OK;
}
"""
FLASK = '''\
import json
from flask import Flask, Response

app = Flask(__name__)


@app.get("/hello")
def hello():
    return "Hello, world!\\n", 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.get("/heavy")
def heavy():
    items = [{"id": i, "name": "item", "price": i * 1.25, "in_stock": i % 3 != 0} for i in range(1000)]
    return Response(json.dumps(items, separators=(",", ":")), content_type="application/json")
'''


def nginx(tmp: Path) -> tuple[object, int] | None:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if binary is None:
        print("  nginx is not installed (scripts/setup installs it): its column is skipped")
        return None
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""\
        worker_processes 2; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log; daemon off;
        events {{ worker_connections 4096; }}
        http {{ access_log off; keepalive_requests 1000000;
          server {{ listen 127.0.0.1:{port};
            location /hello {{ default_type text/plain; return 200 "Hello, world!\\n"; }} }} }}
        """))
    return start([binary, "-p", str(tmp), "-c", str(conf)], f"http://127.0.0.1:{port}/hello", tmp / "nginx.log"), port


KORE_MODULE = r"""
#include <kore/kore.h>
#include <kore/http.h>

int hello(struct http_request *);

int hello(struct http_request *req)
{
    http_response_header(req, "content-type", "text/plain; charset=utf-8");
    http_response(req, 200, "Hello, world!\n", 14);
    return (KORE_RESULT_OK);
}
"""


def kore(tmp: Path) -> tuple[object, int] | None:
    """Kore serving the same reply from a module of its own (no TLS, 2 workers)."""
    binary = shutil.which("kore")
    if binary is None:
        print("  kore is not installed (scripts/setup installs it): its column is skipped")
        return None
    (tmp / "kore_hello.c").write_text(KORE_MODULE)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(tmp / "kore_hello.so"), str(tmp / "kore_hello.c")],
                   check=True)
    port = free_port()
    (tmp / "kore.conf").write_text(textwrap.dedent(f"""\
        server notls {{
            bind 127.0.0.1 {port}
            tls no
        }}
        load {tmp}/kore_hello.so
        workers 2
        worker_max_connections 4096
        http_keepalive_time 300
        http_request_limit 1000000
        domain * {{
            attach notls
            route /hello hello
        }}
        """))
    return start([binary, "-c", str(tmp / "kore.conf"), "-f", "-n", "-r"], f"http://127.0.0.1:{port}/hello",
                 tmp / "kore.log"), port


def main() -> None:
    with scratch() as tmp:
        app = tmp / "app"
        app.mkdir()
        (app / "deploy.yaml").write_text(MANIFEST)
        (app / "bench.c").write_text(MODULE)
        (tmp / "flask_heavy.py").write_text(FLASK)
        servers: dict[str, int] = {}
        procs = []
        try:
            variants = [("hotplate fast path", "1", None), ("hotplate core, driven", "0", None)]
            if baseline := os.environ.get("BENCH_BASELINE"):
                variants += [("before: fast path", "1", baseline), ("before: fast path off", "0", baseline)]
            for i, (name, env, tree) in enumerate(variants):
                port = free_port()
                procs.append(start(["env", f"HOTPLATE_FAST_PATH={env}", *([f"PYTHONPATH={tree}"] if tree else []),
                                    sys.executable, "-m", "hotplate.controller.cli", "serve", str(app),
                                    "--state", str(tmp / f"state-{i}"), "--bind", f"127.0.0.1:{port}",
                                    "--workers", "2", "--threads", "8"],
                                   f"http://127.0.0.1:{port}/hello", tmp / f"hotplate-{i}.log"))
                servers[name] = port
            port = free_port()
            procs.append(start([sys.executable, "-m", "gunicorn", *GUNICORN, "--chdir", str(tmp), "-b",
                                f"127.0.0.1:{port}", "flask_heavy:app"], f"http://127.0.0.1:{port}/hello",
                               tmp / "flask.log"))
            servers["Flask view"] = port
            for name, anchor in (("nginx", nginx), ("Kore", kore)):
                if found := anchor(tmp):
                    procs.append(found[0])
                    servers[name] = found[1]
            runs = {(name, kind): [] for name in servers for kind in ("c32", "c1", "heavy")}
            for _ in range(ROUNDS):
                for name, port in servers.items():
                    url = f"http://127.0.0.1:{port}"
                    runs[name, "c32"].append(wrk(url + "/hello", SECONDS))
                    runs[name, "c1"].append(wrk(url + "/hello", SECONDS, connections=1, threads=1))
                    if name not in ("nginx", "Kore"):
                        runs[name, "heavy"].append(wrk(url + "/heavy", SECONDS))
        finally:
            for proc in procs:
                stop(proc)
    rps = {key: median(r["rps"] for r in results) for key, results in runs.items() if results}
    p99 = {key: median(r["p99_ms"] for r in results) for key, results in runs.items() if results}
    errors = {name: sum(r["non2xx"] for k in ("c32", "c1", "heavy") for r in runs[name, k]) for name in servers}
    rows = [[name, f"{rps[name, 'c32']:.0f}", f"{p99[name, 'c32']:.2f}", f"{rps[name, 'c1']:.0f}",
             f"{rps[name, 'heavy']:.0f}" if (name, "heavy") in rps else "-", errors[name]] for name in servers]
    table(f"GET /hello (14 bytes) and GET /heavy (1,000 JSON objects), wrk keep-alive, median of {ROUNDS} x "
          f"{SECONDS}s, alternating", ["server", "/hello c32 req/s", "p99 ms", "/hello c1 req/s", "/heavy c32 req/s",
                                       "non-2xx"], rows)
    fast = "hotplate fast path"
    checks = []
    targets = {("nginx", "c32"): 0.95, ("nginx", "c1"): 0.9, ("Kore", "c32"): 1.0}  # issue 23
    for (anchor, kind), target in targets.items():
        if anchor in servers:
            ratio = rps[fast, kind] / rps[anchor, kind]
            checks.append([f"/hello {kind}: fast path / {anchor}", f"{ratio:.2f}x", f">= {target:.2f}x",
                           ratio >= target])
    if "nginx" in servers:
        gap = p99[fast, "c32"] - p99["nginx", "c32"]
        checks.append(["/hello c32 p99: fast path - nginx", f"{gap:+.2f} ms", "<= +1 ms", gap <= 1])
    ratio = rps[fast, "heavy"] / rps["Flask view", "heavy"]
    checks.append(["/heavy: fast path / Flask view", f"{ratio:.1f}x", ">= 10x", ratio >= 10])
    ratio = rps[fast, "heavy"] / rps["hotplate core, driven", "heavy"]
    checks.append(["/heavy: fast path / driven core", f"{ratio:.1f}x", "-", None])
    checks.append(["/hello c32 p99: fast / driven core", f"{p99[fast, 'c32']:.2f} / "
                   f"{p99['hotplate core, driven', 'c32']:.2f} ms", "no worse",
                   p99[fast, "c32"] <= p99["hotplate core, driven", "c32"]])
    if "before: fast path" in servers:
        for now, before in ((fast, "before: fast path"), ("hotplate core, driven", "before: fast path off")):
            for kind in ("c32", "c1", "heavy"):
                ratio = rps[now, kind] / rps[before, kind]
                checks.append([f"{kind}: {now} / {before}", f"{ratio:.2f}x", "no worse", None])
    table("Targets", ["measure", "measured", "target", "met"],
          [[m, v, t, "-" if ok is None else "MET" if ok else "NOT MET"] for m, v, t, ok in checks])


if __name__ == "__main__":
    main()
