"""The trust boundary, tried as an attacker with push access, or with a
process on the same host, would (issue 9)."""
import json
import socket
import time
from pathlib import Path

import pytest
import requests

from hotplate.server.websocket import bus, transfer

from .test_controller import MANIFEST, first_deploy, hello, text
from .test_websockets import manifest, raw_connect, read_until
from .conftest import APPS, Work, write_app


def test_compiler_flags_cannot_run_or_read_anything_else(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    marker = tmp_path / "pwned"
    attacks = {
        f'["-wrapper", "/bin/sh,-c,touch {marker}"]': "'-wrapper' is not allowed",
        f'["-B{tmp_path}"]': "is not allowed: it changes which programs",
        '["-include/etc/shadow"]': "'/etc/shadow' is outside the app directory",
        '["-fplugin=/tmp/evil.so"]': "is not allowed: it loads a plugin",
        '["@/etc/passwd"]': "is not allowed: it reads more flags from a file",
    }
    for flags, said in attacks.items():
        work.commit(f"flags {flags}", {"deploy.yaml": MANIFEST.replace("source: hello.c",
                                                                        f"source: hello.c\n        cflags: {flags}"),
                                       "hello.c": hello("v2")})
        out = work.push()
        assert said in out and "deploy FAILED (ManifestInvalid)" in out, out
        assert "root:" not in out
    assert not marker.exists(), "no program ran on the controller's host"
    assert text(server) == "v1"


def test_the_compiler_sees_the_app_and_nothing_of_the_host(up, tmp_path):
    """An include of a host file or of the controller's token fails as a
    missing file inside the build sandbox: no line of it reaches any output."""
    server, work = first_deploy(up, tmp_path)
    token = server.token()
    for include in ("/etc/passwd", "../../token", "../../hotplate.db"):
        work.commit(f"include {include}", {"hello.c": f'#include "{include}"\n' + hello("v2")})
        out = work.push()
        assert "deploy FAILED (BuildFailed)" in out and "No such file or directory" in out, out
        assert "root:" not in out and token not in out
        row = server.deploys()[0]
        assert "root:" not in row["log"] and token not in row["log"]
    assert text(server) == "v1"


def test_a_local_process_cannot_reach_the_workers_sockets(serve, tmp_path):
    """The connection-move and publish sockets live in the abstract namespace,
    which any local process can reach: what it sends is dropped."""
    server = serve(write_app(tmp_path / "app", manifest(), copy=("wsecho.c",)))
    sock, worker = raw_connect(server, "/ws/r1")
    run_dir = server.state / "run"

    forged = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    forged.connect(transfer.address(run_dir, worker, "bus"))
    try:
        forged.sendall(bus.frame(time.time(), 1, 1, b"r1", 1, b"forged"))
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before it was sent
    mine, theirs = socket.socketpair()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as move:
        move.connect(transfer.address(run_dir, worker, "move"))
        socket.send_fds(move, [json.dumps({"sender": 1, "batch": 1, "connections": [{}]}).encode()],
                        [theirs.fileno()])
    theirs.close()
    assert hung_up(mine), "the worker closed the descriptor it was sent instead of serving it"
    assert hung_up(forged), "the worker hung up on the forged publisher"

    said = requests.post(server.url + "/say/r1", data=b"news", timeout=5)
    assert said.status_code == 200
    data = read_until(sock, b"news")
    assert b"forged" not in data
    log = server.output()
    assert "bus: refused a connection from pid" in log
    assert "which is not a worker of this server; it was dropped" in log


def hung_up(sock: socket.socket) -> bool:
    """Whether the other end closed (or reset) the connection within 10 s."""
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


SNOOP = """\
    modules:
      snoop:
        source: snoop.c
        config: {{probe: "{probe}"}}
        {unconfined}
        routes:
          - {{path: /open, handler: try_open}}
          - {{path: /exec, handler: try_exec}}
          - {{path: /signal, handler: try_signal}}
          - {{path: /limits, handler: limits}}
    limits: {{open_files: 4096, processes: 512, address_space: 8GiB}}
    """


def push_snoop(work, probe: str, unconfined: str = "") -> str:
    work.commit(f"snoop {probe}", {"deploy.yaml": SNOOP.format(probe=probe, unconfined=unconfined),
                                   "snoop.c": (APPS / "snoop.c").read_text()})
    return work.push()


def test_a_module_cannot_read_the_controllers_secrets(up, tmp_path):
    """Module code (the smoke check's hp_init and the handlers) runs as the
    workers' account: the token, the history, the repository and the
    controller's environment are out of its reach."""
    server = up(env={"HOTPLATE_WEBHOOK_SECRET": "s3cret-webhook"})
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    out = push_snoop(work, probe=str(server.state / "token"))
    assert "deploy succeeded" in out, "the smoke check's hp_init could not open the token"
    controller = json.loads((server.state / "run" / "controller.json").read_text())["pid"]
    master = int((server.state / "run" / "server.pid").read_text())
    for secret in (server.state / "token", server.state / "hotplate.db", server.state / "repo.git" / "config",
                   server.state / "run" / "gunicorn.ctl", f"/proc/{controller}/environ", f"/proc/{master}/environ"):
        assert server.get(f"/open?path={secret}").text.strip() in ("EACCES", "ENOENT"), secret
    for pid in (controller, master):
        assert server.get(f"/signal?pid={pid}").text.strip() == "EPERM"
    uid, address_space, files, processes = map(int, server.get("/limits").text.split())
    assert uid != 0 and (address_space, files, processes) == (8 * 1024 ** 3, 4096, 512), "limits from deploy.yaml"
    worker = next(p for p in (server.state / "run" / "workers").glob("*.json") if p.stem.isdigit())
    for pid in (controller, master, int(worker.stem)):
        assert b"s3cret-webhook" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    for pid in (master, int(worker.stem)):
        assert b"s3cret-webhook" not in Path(f"/proc/{pid}/environ").read_bytes(), "the server never inherits it"

    out = push_snoop(work, probe="/etc/hostname")  # a file anyone can read: the probe works
    assert "deploy FAILED (SmokeCheckFailed)" in out and "snoop (snoop.c): hp_init returned -1" in out, out


def test_a_module_cannot_run_programs_unless_it_says_why(up, tmp_path):
    server = up()
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    marker = server.state / "data" / "ran"  # the workers' directory, where they may write
    assert "deploy succeeded" in push_snoop(work, probe="/nonexistent")
    r = server.get("/exec?cmd=touch+ran")
    assert r.status_code == 500 and "it called execve, which modules may not" in r.json()["error"]
    assert "crashed with SIGSYS: it called execve" in (server.state / "run" / "server.log").read_text()
    assert server.wait(lambda: server.get("/limits").ok, what="a fresh worker")
    assert not marker.exists()

    out = push_snoop(work, probe="/nonexistent", unconfined="unconfined: runs sh to make thumbnails")
    assert "deploy succeeded" in out, out
    with pytest.raises(requests.ConnectionError):  # the worker became sh
        server.get("/exec?cmd=touch+ran")
    assert server.wait(marker.exists, what="the opted-out module to run a program")
    assert "runs without the system-call filter: runs sh to make thumbnails" in \
        (server.state / "run" / "server.log").read_text()
