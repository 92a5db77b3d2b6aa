"""The documented database patterns, against real servers: PostgreSQL
through libpq (`pkg-config: [libpq]`), a connection per handler thread."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest
import requests

from .conftest import free_port, terminate, wait_for, write_app

APP = """\
    modules:
      pg:
        source: modules/pgnotes.c
        pkg-config: [libpq]
        config: {dsn: "host=127.0.0.1 port=PORT dbname=postgres user=postgres connect_timeout=5"}
        routes:
          - {path: /pg, methods: [POST], handler: add}
          - {path: /pg, methods: [GET], handler: list}
    """


@pytest.fixture
def postgres(tmp_path):
    """A PostgreSQL server of the test's own (Debian's postgresql), on a free loopback port."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    assert bins, "PostgreSQL is not installed: run scripts/setup"
    data, port = tmp_path / "pg", free_port()
    data.mkdir()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(data, "postgres", "postgres")
    subprocess.run([*as_postgres, f"{bins[-1]}/initdb", "-D", str(data), "-U", "postgres", "-A", "trust"],
                   check=True, capture_output=True)
    proc = subprocess.Popen([*as_postgres, f"{bins[-1]}/postgres", "-D", str(data), "-p", str(port), "-k", str(data),
                             "-c", "listen_addresses=127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: subprocess.run([f"{bins[-1]}/pg_isready", "-h", "127.0.0.1", "-p", str(port)],
                                    capture_output=True).returncode == 0, what="postgres to accept connections")
    yield port
    terminate(proc, 15)


def test_a_module_uses_postgresql_with_a_connection_per_thread(postgres, serve, tmp_path):
    app = write_app(tmp_path / "app", APP.replace("PORT", str(postgres)), copy=("pgnotes.c",))
    server = serve(app, workers=2, threads=4)
    ids = [requests.post(server.url + "/pg", data=f"note {i}", timeout=10) for i in range(20)]
    assert all(r.status_code == 201 for r in ids), [r.text for r in ids]
    notes = requests.get(server.url + "/pg", timeout=10).json()
    assert [n["body"] for n in notes] == [f"note {i}" for i in range(20)]
    assert len({r.text for r in ids}) == 20
