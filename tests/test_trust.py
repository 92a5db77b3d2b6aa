"""The trust boundary, tried as an attacker with push access, or with a
process on the same host, would (issue 9)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from hotplate.server.contract.layout import Layout
from hotplate.server.websocket import bus, transfer

from .test_controller import MANIFEST, first_deploy, hello, text
from .test_websockets import manifest, raw_connect, read_until
from .conftest import APPS, ROOT, Work, free_port, write_app


def test_compiler_flags_cannot_run_or_read_anything_else(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    marker = tmp_path / "pwned"
    attacks = {
        f'["-wrapper", "/bin/sh,-c,touch {marker}"]': "'-wrapper' is not allowed",
        f'["-B{tmp_path}"]': "is not allowed: it changes which programs",
        '["-include/etc/shadow"]': "'/etc/shadow' is outside the app directory",
        '["-fplugin=/tmp/evil.so"]': "is not allowed: it loads a plugin",
        '["@/etc/passwd"]': "is not allowed: it reads more flags from a file",
        '["-fcompare-debug=-fplugin=/tmp/evil.so"]': "it passes options on to",
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
    layout = Layout(server.state)

    forged = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    forged.connect(transfer.address(layout, worker, "bus"))
    try:
        forged.sendall(bus.frame(time.time(), 1, 1, b"r1", 1, b"forged"))
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before it was sent
    mine, theirs = socket.socketpair()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as move:
        move.connect(transfer.address(layout, worker, "move"))
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
                   server.state / "run" / "master.sock", f"/proc/{controller}/environ", f"/proc/{master}/environ",
                   f"/proc/{controller}/cmdline", f"/proc/{master}/cmdline"):
        assert server.get(f"/open?path={secret}").text.strip() in ("EACCES", "ENOENT"), secret
    for pid in (controller, master):
        assert server.get(f"/signal?pid={pid}").text.strip() == "EPERM"
    uid, gid, groups, address_space, files, processes = map(int, server.get("/limits").text.split())
    assert uid != 0 and gid != 0 and groups == 1, "nothing of root's account: no group but the passage group"
    assert (address_space, files, processes) == (8 * 1024 ** 3, 4096, 512), "limits from deploy.yaml"
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
    # logged by the worker's Python side once the fast path has answered (server/core.py)
    server.wait(lambda: "crashed with SIGSYS: it called execve" in (server.state / "run" / "server.log").read_text(),
                timeout=10, what="the crash in the server log")
    assert server.wait(lambda: server.get("/limits").ok, what="a fresh worker")
    assert not marker.exists()

    out = push_snoop(work, probe="/nonexistent", unconfined="unconfined: runs sh to make thumbnails")
    assert "deploy succeeded" in out, out
    with pytest.raises(requests.ConnectionError):  # the worker became sh
        server.get("/exec?cmd=touch+ran")
    assert server.wait(marker.exists, what="the opted-out module to run a program")
    assert "runs without the system-call filter: runs sh to make thumbnails" in \
        (server.state / "run" / "server.log").read_text()


def ssh_key(tmp_path: Path, name: str) -> Path:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def test_hosted_mode_refuses_pushes_not_signed_by_a_trusted_ssh_key(up, tmp_path):
    trusted, stranger = ssh_key(tmp_path, "trusted"), ssh_key(tmp_path, "stranger")
    allowed = tmp_path / "allowed_signers"  # outside the repository it checks
    allowed.write_text(f"dev@example.com {trusted.with_suffix('.pub').read_text()}")
    server = up("--verify", f"ssh:{allowed}")
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    for key, value in (("gpg.format", "ssh"), ("user.signingkey", str(trusted)), ("commit.gpgsign", "true")):
        work.git("config", key, value)
    signed = work.commit("first", {"deploy.yaml": MANIFEST, "hello.c": hello("v1")})
    out = work.push()
    assert "signature: Good" in out and "deploy succeeded" in out, out

    work.git("config", "commit.gpgsign", "false")
    work.commit("unsigned", {"hello.c": hello("v2")})
    out = work.push()
    assert "hotplate: REFUSED: commit" in out and "is not signed by a key trusted by --verify ssh:" in out, out
    assert "pre-receive hook declined" in out
    work.git("config", "commit.gpgsign", "true")
    work.git("config", "user.signingkey", str(stranger))
    work.commit("signed by a stranger", {"hello.c": hello("v3")})
    out = work.push()
    assert "hotplate: REFUSED" in out and "No principal matched" in out, out

    allowed.rename(tmp_path / "moved-away")  # a bad day: the trusted keys vanish while `up` runs
    work.git("config", "user.signingkey", str(trusted))
    work.commit("signed, keys gone", {"hello.c": hello("v4")})
    out = work.push()
    assert "hotplate: REFUSED" in out and "are gone; put them back" in out, out
    allowed.with_name("moved-away").rename(allowed)

    branch = subprocess.run(["git", "--git-dir", str(server.state / "repo.git"), "rev-parse", "main"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert branch == signed, "the refused pushes changed nothing"
    assert text(server) == "v1" and len(server.deploys()) == 1, "nothing of them built"


@pytest.fixture
def gnupg_homes(tmp_path):
    """Two GnuPG homes, and no gpg-agent of theirs left running afterwards."""
    homes = tmp_path / "signer-gnupg", tmp_path / "trusted-gnupg"
    for home in homes:
        home.mkdir(mode=0o700)
    yield homes
    for home in homes:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True)


def test_mirror_mode_deploys_only_a_tip_signed_by_a_trusted_gpg_key(up, tmp_path, gnupg_homes):
    signer, trusted = gnupg_homes
    gpg = ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run([*gpg, "--homedir", str(signer), "--quick-gen-key", "Dev <dev@example.com>", "ed25519", "sign",
                    "never"], check=True, capture_output=True)
    public = subprocess.run(["gpg", "--homedir", str(signer), "--export", "dev@example.com"], check=True,
                            capture_output=True).stdout
    subprocess.run(["gpg", "--homedir", str(trusted), "--import"], input=public, check=True, capture_output=True)

    upstream = Work(tmp_path / "upstream", "unused")
    upstream.commit("unsigned", {"deploy.yaml": MANIFEST, "hello.c": hello("unsigned")})
    server = up(str(upstream.path), "--poll", "0.5", "--verify", f"gpg:{trusted}")
    status = server.wait(lambda: (s := server.status())["state"] == "Failed" and s, what="the unsigned tip refused")
    assert status["failure"]["reason"] == "UnverifiedCommit", status
    assert "is not signed by a key trusted by --verify gpg:" in status["failure"]["detail"]
    assert server.get("/").status_code == 503, "nothing went live"

    upstream.git("config", "gpg.program", "gpg")
    upstream.git("config", "commit.gpgsign", "true")
    os.environ["GNUPGHOME"] = str(signer)
    try:
        upstream.commit("signed", {"hello.c": hello("signed")})
    finally:
        del os.environ["GNUPGHOME"]
    server.wait(lambda: server.get("/").status_code == 200 and text(server) == "signed", what="the signed tip live")


OVERFLOW_APP = """\
    modules:
      mem:
        source: mem.c
        routes:
          - {path: /overflow, handler: overflow}
          - {path: /ok, handler: ok}
    """
OVERFLOW_C = """\
    #include <hotplate.h>
    #include <stdlib.h>
    HP_MODULE;
    HP_EXPORT int overflow(hp_request *req, hp_response *res) {
        volatile char *p = malloc(8);
        p[atoi(hp_req_query(req, "i") ?: "8")] = 1;
        free((void *)p);
        return hp_res_printf(res, "no error\\n");
    }
    HP_EXPORT int ok(hp_request *req, hp_response *res) { return hp_res_printf(res, "ok\\n"); }
    """


def test_dev_sanitize_reports_a_heap_overflow_with_its_line(tmp_path):
    app = write_app(tmp_path / "app", OVERFLOW_APP, {"mem.c": OVERFLOW_C})
    port = free_port()
    log = tmp_path / "dev.log"
    proc = subprocess.Popen([sys.executable, "-m", "hotplate.controller.cli", "dev", str(app), "--sanitize",
                             "--bind", f"127.0.0.1:{port}", "--workers", "1"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while "deploy succeeded" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.1)
        assert requests.get(url + "/overflow?i=7", timeout=10).text == "no error\n"
        r = requests.get(url + "/overflow", timeout=10)
        assert r.status_code == 500, r.text
        error = r.json()["error"]
        assert "heap-buffer-overflow" in error and "mem.c:6" in error, error
        deadline = time.monotonic() + 30
        while "heap-buffer-overflow" not in log.read_text():
            assert time.monotonic() < deadline, "the report reaches the dev console"
            time.sleep(0.1)
        assert requests.get(url + "/ok", timeout=10).text == "ok\n"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_unprivileged_the_controller_keeps_its_memory_and_environment_to_itself(up, tmp_path):
    """Started unprivileged, module code runs as the controller's own user
    (README, trust model); the controller's memory and /proc/PID/environ,
    which holds a webhook secret given by environment, stay out of reach."""
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.chown(cache, "hotplate", "hotplate")
    server = up(user="hotplate", env={"HOTPLATE_WEBHOOK_SECRET": "s3cret-webhook", "XDG_CACHE_HOME": str(cache)})
    controller = json.loads((server.state / "run" / "controller.json").read_text())["pid"]
    read = subprocess.run(["runuser", "-u", "hotplate", "--", "cat", f"/proc/{controller}/environ"],
                          capture_output=True, text=True)
    assert read.returncode != 0 and "Permission denied" in read.stderr, read
    cmdline = subprocess.run(["runuser", "-u", "hotplate", "--", "cat", f"/proc/{controller}/cmdline"],
                             capture_output=True, text=True)
    assert cmdline.returncode == 0 and "hotplate.controller.cli" in cmdline.stdout and "s3cret" not in cmdline.stdout
