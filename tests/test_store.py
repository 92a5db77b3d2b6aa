"""The shared key-value store (hp_kv_*): its semantics on both backends,
LMDB and a real redis-server, and shared by the workers of a server."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from hotplate.server.paths import INCLUDE_DIR, RUNTIME_DIR
from hotplate.server.libhotplate import c_sources
from hotplate.server.libhotplate import LIBS

from .conftest import ROOT, Work, free_port, terminate, wait_for

VISITS = """
#include <hotplate.h>
HP_MODULE;
HP_EXPORT int visit(hp_request *req, hp_response *res) {
    long long n;
    if (hp_kv_incr("visits", 1, &n) != HP_KV_OK)
        return hp_res_printf(res, "error %s\\n", hp_kv_error());
    return hp_res_printf(res, "VERSION %lld\\n", n);
}
"""
MANIFEST = """
modules:
  visits:
    source: visits.c
    routes:
      - {path: /, handler: visit}
"""


@pytest.fixture(scope="module")
def store_test(tmp_path_factory):
    """tests/c/test_store.c, built with the runtime under ASan and UBSan."""
    exe = tmp_path_factory.mktemp("store") / "test_store"
    sources = [str(p) for p in c_sources()]
    subprocess.run(["cc", "-std=gnu11", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                    "-Wall", "-Wextra", "-Werror", f"-I{INCLUDE_DIR}", f"-I{RUNTIME_DIR}", "-o", str(exe),
                    str(ROOT / "tests/c/test_store.c"), *sources, *LIBS], check=True)
    return exe


@pytest.fixture
def redis_url(tmp_path):
    """A redis-server of the test's own, on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                                    text=True).stdout.strip() == "PONG", what="redis-server to answer")
    yield f"redis://127.0.0.1:{port}/3"
    terminate(proc, 5)


def run(exe, url: str) -> str:
    result = subprocess.run([str(exe), url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert " 0 failed" in result.stdout
    return result.stdout


def test_lmdb_store_semantics(store_test, tmp_path):
    run(store_test, f"lmdb:{tmp_path / 'store'}")


def test_redis_store_semantics(store_test, redis_url):
    run(store_test, redis_url)
    port = redis_url.split(":")[2].split("/")[0]
    keys = subprocess.run(["redis-cli", "-p", port, "-n", "3", "get", "shared"], capture_output=True, text=True)
    assert keys.stdout.strip() == "2000"  # in the database the URL names


def test_unreachable_redis_is_an_error_not_a_hang(store_test):
    result = subprocess.run([str(store_test), f"redis://127.0.0.1:{free_port()}"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "Connection refused" in result.stderr


@pytest.mark.parametrize("backend", ["lmdb", "redis"])
def test_store_is_shared_by_workers_and_survives_deploys(up, tmp_path, backend, request):
    extra = ("--store", request.getfixturevalue("redis_url")) if backend == "redis" else ()
    server = up(*extra)
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    work.commit("v1", {"deploy.yaml": MANIFEST, "visits.c": VISITS.replace("VERSION", "v1")})
    assert "deploy succeeded" in work.push()
    first = [server.get("/").text.split() for _ in range(10)]  # new connections, either worker
    assert [int(n) for _, n in first] == list(range(1, 11)), first
    work.commit("v2", {"visits.c": VISITS.replace("VERSION", "v2")})
    assert "deploy succeeded" in work.push()
    assert server.get("/").text == "v2 11\n"  # new workers, new code, the same store
    if backend == "lmdb":
        assert (server.state / "data" / "store" / "data.mdb").exists()
