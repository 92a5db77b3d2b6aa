"""App config and secrets (hotplate config, config.yaml, hp_config): set,
rolled to the workers, hidden, encrypted at rest, restored by rollback."""
from __future__ import annotations

import concurrent.futures
import os
import subprocess

import requests

from .conftest import Work

MODULE = """
#include <hotplate.h>
#include <stdio.h>
#include <string.h>
HP_MODULE;
static const char *at_init;
HP_EXPORT int hp_init(hp_module *mod) {
    const char *mode = hp_config("MODE");
    if (mode && !strcmp(mode, "broken")) {
        hp_module_log(mod, HP_LOG_ERROR, "MODE=broken: refusing to start");
        return HP_ERROR;
    }
    at_init = hp_config("GREETING");
    return HP_OK;
}
static const char *or_none(const char *s) { return s ? s : "(none)"; }
HP_EXPORT int show(hp_request *req, hp_response *res) {
    return hp_res_printf(res, "GREETING=%s\\ninit=%s\\nPLAIN=%s\\nCOMMITTED_SECRET=%s\\nDB_PASSWORD=%s\\n",
                         or_none(hp_config("GREETING")), or_none(at_init), or_none(hp_config("PLAIN")),
                         or_none(hp_config("COMMITTED_SECRET")), or_none(hp_config("DB_PASSWORD")));
}
"""
MANIFEST = """
modules:
  cfg:
    source: cfg.c
    routes:
      - {path: /, handler: show}
"""


def values(server) -> dict:
    return dict(line.split("=", 1) for line in server.get("/").text.splitlines())


def test_config_set_rolls_workers_hides_secrets_and_rollback_restores(up, tmp_path):
    server = up()
    recipient = server.cli("config", "recipient")
    assert recipient.returncode == 0 and recipient.stdout.startswith("age1"), recipient.stderr
    armored = server.cli("config", "encrypt", "s3cret-in-git").stdout.strip()
    assert armored.startswith("-----BEGIN AGE ENCRYPTED FILE-----") and "s3cret" not in armored
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    committed = "PLAIN: hello\nCOMMITTED_SECRET: |\n" + "".join(f"  {line}\n" for line in armored.splitlines())
    work.commit("v1", {"deploy.yaml": MANIFEST, "cfg.c": MODULE, "config.yaml": committed})
    out = work.push()
    assert "deploy succeeded" in out and "config: 2 keys" in out, out
    assert values(server) == {"GREETING": "(none)", "init": "(none)", "PLAIN": "hello",
                              "COMMITTED_SECRET": "s3cret-in-git", "DB_PASSWORD": "(none)"}
    first = server.status()["live"]["release"]
    pids = {w["pid"] for w in server.status()["workers"]}

    done = server.cli("config", "set", "GREETING=hi there", "PLAIN=overridden", "--wait", "--timeout", "60")
    assert done.returncode == 0 and "live with config set" in done.stdout, done.stdout + done.stderr
    got = values(server)  # hp_init saw it too: the smoke check and the workers run with the set
    assert got["GREETING"] == "hi there" and got["init"] == "hi there" and got["PLAIN"] == "overridden"
    assert not pids & {w["pid"] for w in server.status()["workers"]}, "the workers were not rolled"
    assert server.deploys()[0]["trigger"] == "config"
    status = server.status()
    assert status["state"] == "Synced" and status["config"]["live"] == status["config"]["desired"] is not None
    second = server.status()["live"]["release"]

    assert server.cli("config", "set", "--secret", "DB_PASSWORD=pw-Zq81x", "--wait").returncode == 0
    assert values(server)["DB_PASSWORD"] == "pw-Zq81x"
    listed = server.cli("config", "list")
    assert "DB_PASSWORD=(secret)" in listed.stdout and "COMMITTED_SECRET=(secret)" in listed.stdout
    assert "GREETING=hi there" in listed.stdout and "pw-Zq81x" not in listed.stdout
    assert "pw-Zq81x" not in server.cli("config", "list", "--json").stdout
    again = server.cli("config", "set", "--secret", "DB_PASSWORD=pw-Zq81x")
    assert "live has these values already" in again.stdout  # nothing to roll

    # encrypted at rest: no plaintext value anywhere under the state directory
    for path in server.state.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert b"pw-Zq81x" not in data and b"s3cret-in-git" not in data, path
    if os.geteuid() == 0:  # the workers' account cannot read the controller's identity
        read = subprocess.run(["runuser", "-u", "hotplate", "--", "cat", str(server.state / "config" / "identity")],
                              capture_output=True, text=True)
        assert read.returncode != 0 and "Permission denied" in read.stderr

    rb = server.cli("rollback", "--to", second)
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert values(server)["DB_PASSWORD"] == "(none)" and values(server)["GREETING"] == "hi there"
    assert server.cli("rollback", "--to", first).returncode == 0
    assert values(server)["GREETING"] == "(none)"
    assert server.cli("resume", "--wait").returncode == 0
    server.wait(lambda: values(server)["DB_PASSWORD"] == "pw-Zq81x", what="the latest set after resume")

    unset = server.cli("config", "unset", "DB_PASSWORD", "--wait")
    assert unset.returncode == 0 and values(server)["DB_PASSWORD"] == "(none)"


def test_bad_config_is_refused_clearly_and_live_keeps_serving(up, tmp_path):
    server = up()
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    work.commit("v1", {"deploy.yaml": MANIFEST, "cfg.c": MODULE, "config.yaml": "PLAIN: one\n"})
    assert "deploy succeeded" in work.push()
    broken = server.cli("config", "set", "MODE=broken", "--wait", "--timeout", "60")
    assert broken.returncode == 1 and "FAILED" in broken.stdout, broken.stdout + broken.stderr
    assert "deploy FAILED (SmokeCheckFailed)" in server.cli("logs").stdout  # hp_init refused the set
    assert values(server)["PLAIN"] == "one"  # the live release keeps serving
    status = server.status()
    assert status["state"] == "Failed" and status["config"]["live"] != status["config"]["desired"]
    fixed = server.cli("config", "set", "MODE=ok", "--wait", "--timeout", "60")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert server.status()["state"] == "Synced"
    from pyrage import encrypt, x25519
    foreign = encrypt(b"x", [x25519.Identity.generate().to_public()], armored=True).decode()
    work.commit("v2", {"config.yaml": "PLAIN: two\nOTHER: |\n" + "".join(f"  {l}\n" for l in foreign.splitlines())})
    out = work.push()
    assert "deploy FAILED (BadConfig)" in out and "config.yaml: OTHER: cannot decrypt" in out, out
    assert values(server)["PLAIN"] == "one" and server.status()["state"] == "Failed"
    for bad in (["set", "lower=1"], ["set", "NOEQUALS"], ["unset", "NEVER_SET"]):
        r = server.cli("config", *bad)
        assert r.returncode == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr


def test_config_changes_at_once_lose_nothing_and_garbage_is_refused(up, tmp_path):
    server = up()
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    work.commit("v1", {"deploy.yaml": MANIFEST, "cfg.c": MODULE})
    assert "deploy succeeded" in work.push()
    headers = {**server.auth(), "Content-Type": "application/json"}

    def set_one(i: int) -> int:
        return requests.post(server.api + "/api/config", json={"set": {f"K{i}": str(i)}}, headers=headers,
                             timeout=30).status_code
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        assert set(pool.map(set_one, range(20))) == {202}
    keys = {k["key"] for k in requests.get(server.api + "/api/config", headers=headers, timeout=10).json()["keys"]}
    assert keys == {f"K{i}" for i in range(20)}, "two changes at once lost a key"
    for body in ('{"set": {"K": "a\\u0000b"}}', '{"set": ["K"]}', "not json", '{"unset": "K"}'):
        r = requests.post(server.api + "/api/config", data=body, headers=headers, timeout=10)
        assert r.status_code in (400, 409) and "error" in r.json(), body
    assert server.get("/").status_code == 200  # live kept serving


def test_a_config_set_unreadable_on_this_host_is_not_the_commits_fault(up, tmp_path):
    """The operator's sealed set, which this host can no longer open (a
    damaged disk, a restore gone wrong), fails the deploy as the host's
    fault, retried with backoff; once the file is back, the same commit
    goes live."""
    server = up()
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    work.commit("v1", {"deploy.yaml": MANIFEST, "cfg.c": MODULE})
    assert "deploy succeeded" in work.push()
    assert server.cli("config", "set", "GREETING=kept", "--wait", "--timeout", "60").returncode == 0
    sealed = server.state / "config" / "operator.age"
    good = sealed.read_bytes()
    sealed.write_bytes(b"garbage, not age")
    work.commit("v2", {"config.yaml": "PLAIN: two\n"})
    out = work.push()
    assert "deploy FAILED (ConfigUnreadable, not the commit's fault): retrying in" in out, out
    assert values(server)["GREETING"] == "kept" and values(server)["PLAIN"] == "(none)"  # live keeps serving
    sealed.write_bytes(good)
    server.wait(lambda: server.deploys()[0]["outcome"] == "succeeded", what="the retry once the set was restored")
    assert values(server)["PLAIN"] == "two" and server.deploys()[1]["outcome"] == "errored"
