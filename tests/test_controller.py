"""The GitOps controller end to end: real git pushes and hooks, real gunicorn, real HTTP."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from hotplate.server.contract.control import Master, Unreachable

from .conftest import Work, wait_for

MANIFEST = """\
    modules:
      hello:
        source: hello.c
        health: /health
        routes:
          - {path: /, handler: hello}
          - {path: /health, handler: health}
          - {path: /boom, handler: boom}
    """


def hello(text: str, health: int = 200, boom: str = "return HP_OK;") -> str:
    return f"""\
        #include <hotplate.h>
        #include <unistd.h>
        HP_MODULE;
        HP_EXPORT int hello(hp_request *req, hp_response *res) {{
            return hp_res_printf(res, "{text} from %d\\n", (int)getpid());
        }}
        HP_EXPORT int health(hp_request *req, hp_response *res) {{
            hp_res_status(res, {health});
            return HP_OK;
        }}
        HP_EXPORT int boom(hp_request *req, hp_response *res) {{
            {boom}
        }}
        """


def first_deploy(up, tmp_path, *extra, **kw):
    server = up(*extra, **kw)
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    work.commit("first", {"deploy.yaml": MANIFEST, "hello.c": hello("v1")})
    out = work.push()
    assert "hotplate: deploy succeeded" in out, out
    return server, work


def text(server) -> str:
    return server.get("/").text.split(" from ")[0]


def test_push_deploys_and_streams_progress(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    assert text(server) == "v1"
    sha = work.commit("v2", {"hello.c": hello("v2")})
    out = work.push()
    for expected in ("remote: hotplate: deploying", "remote: hotplate: manifest ok: 1 modules, 3 routes",
                     "remote: hotplate:   hello (hello.c): compiled in", "remote: hotplate: live: 2 workers serve",
                     "remote: hotplate: health /health: 200", "remote: hotplate: deploy succeeded"):
        assert expected in out, out
    pids = {int(server.get("/").text.split()[-1]) for _ in range(6)}
    assert {text(server) for _ in range(6)} == {"v2"}
    status = server.status()
    assert status["state"] == "Synced" and status["live"]["commit"] == sha
    assert {w["release"] for w in status["workers"]} == {status["live"]["release"]}
    assert pids <= {w["pid"] for w in status["workers"]}
    latest = server.deploys()[0]
    assert latest["trigger"] == "push" and latest["outcome"] == "succeeded" and latest["commit_sha"] == sha
    assert latest["author"] == "Dev <dev@example.com>" and latest["message"] == "v2"
    assert list(latest["stages"]) == ["verify", "server_up", "recall", "checkout", "plan", "build", "release", "switch", "roll", "gate"]
    assert latest["modules"][0]["cached"] is False


def test_bad_commits_fail_clearly_and_live_keeps_serving(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    work.commit("broken C", {"hello.c": hello("v2").replace("return hp_res_printf", "return hp_res_printf(")})
    out = work.push()
    assert "hello.c:5:" in out and "error:" in out and "deploy FAILED (BuildFailed); live stays on" in out
    assert text(server) == "v1"
    assert server.status()["state"] == "Failed"

    work.commit("broken manifest", {"deploy.yaml": MANIFEST.replace("handler: hello}", "handlr: hello}"),
                                    "hello.c": hello("v3")})
    out = work.push()
    assert "deploy.yaml:6: modules.hello.routes[0].handlr: unknown key; did you mean `handler`?" in out
    assert "deploy FAILED (ManifestInvalid)" in out and text(server) == "v1"

    work.commit("missing symbol", {"deploy.yaml": MANIFEST.replace("handler: boom", "handler: nope")})
    out = work.push()
    assert "handler(s) deploy.yaml:8: nope not exported by hello.c" in out and "deploy FAILED (SmokeCheckFailed)" in out
    assert text(server) == "v1"

    # A failed commit never blocks a newer one.
    work.commit("fixed", {"deploy.yaml": MANIFEST})
    assert "deploy succeeded" in work.push()
    assert text(server) == "v3"
    outcomes = [d["outcome"] for d in server.deploys()]
    assert outcomes == ["succeeded", "failed", "failed", "failed", "succeeded"]


def test_a_smoke_check_that_dies_fails_its_deploy_and_nothing_else(up, tmp_path):
    """The smoke check is a fork of the gunicorn master: one whose hp_init
    exits with gunicorn's own boot-error code (3), or is killed, fails its
    deploy with how it died; the master serves on, and the next commit
    deploys."""
    server, work = first_deploy(up, tmp_path)
    master = server.status()["server"]["pid"]
    for how, said in (("_exit(3);", "smoke check process died (exit 3)"),
                      ("kill(getpid(), SIGKILL);", "smoke check process died (SIGKILL)")):
        source = hello("v2") + f"#include <signal.h>\nHP_EXPORT int hp_init(hp_module *m) {{ {how} return HP_OK; }}\n"
        work.commit("dies", {"hello.c": source})
        out = work.push()
        assert said in out and "deploy FAILED (SmokeCheckFailed)" in out, out
        assert text(server) == "v1" and server.status()["server"]["pid"] == master
    work.commit("fine", {"hello.c": hello("v3")})
    assert "deploy succeeded" in work.push()
    assert text(server) == "v3"


def test_the_workers_forked_ahead_of_a_roll_go_away_when_the_deploy_does_not_roll(up, tmp_path):
    """Each deploy forks its roll's workers as it begins (held, loading
    nothing until the roll): a deploy that fails before its roll lets
    them go, and the serving workers are the same ones, no more."""
    server, work = first_deploy(up, tmp_path)
    master = Master(server.state / "run" / "master.sock")
    serving = {w["pid"] for w in server.status()["workers"]}
    wait_for(lambda: set(master.workers()) == serving, what="only the serving workers under the master")
    work.commit("broken", {"hello.c": hello("v2").replace("return hp_res_printf", "return hp_res_printf(")})
    assert "deploy FAILED (BuildFailed)" in work.push()
    wait_for(lambda: set(master.workers()) == serving, what="the held workers gone")
    assert {w["pid"] for w in server.status()["workers"]} == serving and text(server) == "v1"
    work.commit("fine", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    assert text(server) == "v2" and not serving & {w["pid"] for w in server.status()["workers"]}


def held_by_a_push_elsewhere(server, work) -> tuple[Master, set[int], set[int]]:
    """Push to a branch nobody tracks (back on main after): its arrival
    holds workers. The master, the serving workers, the held ones."""
    master = Master(server.state / "run" / "master.sock")
    serving = {w["pid"] for w in server.status()["workers"]}
    wait_for(lambda: set(master.workers()) == serving, what="only the serving workers under the master")
    work.git("checkout", "-q", "-b", "feature")
    work.commit("elsewhere", {"notes.txt": "not deployed"})
    work.git("push", "-q", "origin", "feature")
    held = wait_for(lambda: set(master.workers()) - serving, what="workers held as the push arrived")
    work.git("checkout", "-q", "main")
    return master, serving, held


def test_the_workers_held_as_a_push_arrives_are_the_ones_its_deploy_rolls(up, tmp_path):
    """Workers are held as soon as a push's objects arrive, before its
    ref moves (controller/refwatch.py): a push to a branch nobody tracks
    holds them, and the next deploy rolls those very workers instead of
    forking its own; the master keeps none besides the serving ones."""
    server, work = first_deploy(up, tmp_path)
    master, serving, held = held_by_a_push_elsewhere(server, work)
    assert len(held) == 2, held
    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    assert text(server) == "v2"
    assert {w["pid"] for w in server.status()["workers"]} == held
    wait_for(lambda: set(master.workers()) == held, what="no worker on the books but the serving ones")


def test_workers_held_by_a_controller_killed_meanwhile_go_when_the_next_one_adopts_the_server(up, tmp_path):
    """A controller killed (kill -9) while it holds workers for a push
    never takes them, nor does its timer end them: the next controller,
    adopting the master that kept serving, lets them go; the next push
    deploys as before."""
    server, work = first_deploy(up, tmp_path)
    master, serving, _ = held_by_a_push_elsewhere(server, work)
    server.kill()
    server.start()
    wait_for(lambda: set(master.workers()) == serving, what="the held workers gone once the server is adopted")
    assert text(server) == "v1"
    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    assert text(server) == "v2"


def test_a_controller_restarted_beside_a_stopped_master_comes_up_and_deploys_once_it_runs_again(up, tmp_path):
    """Adopting a master that does not run its loop (stopped, or busy):
    the question about held workers gives up after the master line's
    timeout, the controller comes up and answers, and once the master
    runs again the next push deploys."""
    server, work = first_deploy(up, tmp_path)
    pid = server.status()["server"]["pid"]
    server.kill()
    os.kill(pid, signal.SIGSTOP)
    try:
        server.start()  # (raises if its API does not answer within 60 s)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert server.status()["server"]["pid"] == pid and text(server) == "v1"
    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    assert text(server) == "v2"


def test_a_request_the_master_does_not_know_is_refused_as_unreachable(up, tmp_path):
    """A master of another hotplate version, adopted after an upgrade,
    answers a request it does not know with an error: the controller's
    side raises Unreachable, which every caller does without, never a
    KeyError on the missing answer; the master serves on."""
    server, _ = first_deploy(up, tmp_path)
    master = Master(server.state / "run" / "master.sock")
    with pytest.raises(Unreachable, match="refused 'nonsense': unknown request"):
        master.ask({"op": "nonsense"})
    assert set(master.workers()) == {w["pid"] for w in server.status()["workers"]}
    assert text(server) == "v1"


def test_at_rest_the_controller_keeps_no_git_process(up, tmp_path):
    """GitPython's two `git cat-file` processes end once no object has been
    read for a while (controller/source.py's REST_S), and the next push
    deploys as before (its arrival starts them again)."""
    server, work = first_deploy(up, tmp_path)
    controller = json.loads((server.state / "run" / "controller.json").read_text())["pid"]

    def read(path: str) -> str:
        try:
            return Path(path).read_bytes().replace(b"\0", b" ").decode()
        except FileNotFoundError:  # (a thread, or a child, that ended meanwhile)
            return ""

    def git_children() -> list[str]:
        pids = [pid for task in Path(f"/proc/{controller}/task").iterdir() for pid in read(f"{task}/children").split()]
        return [cmd for pid in pids if (cmd := read(f"/proc/{pid}/cmdline")).startswith("git ")]

    wait_for(lambda: not git_children(), what="the controller's git processes gone at rest")
    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    assert text(server) == "v2"
    wait_for(lambda: not git_children(), what="the controller's git processes gone at rest again")


def test_a_held_worker_that_dies_before_the_roll_is_replaced_and_the_master_serves_on(up, tmp_path):
    """A roll's worker killed while it is held (the kernel's OOM killer,
    an operator): the roll forks another in its place, the deploy goes
    live, and the master neither halts nor keeps the dead one on its books."""
    server, work = first_deploy(up, tmp_path)
    master = Master(server.state / "run" / "master.sock")
    pid = server.status()["server"]["pid"]
    serving = {w["pid"] for w in server.status()["workers"]}
    slow = "static const int big[] = {" + ",".join(str(i) for i in range(300_000)) + "};\n"  # (a compile of seconds)
    work.commit("slow to build", {"hello.c": hello("v2") + slow + "int first(void) { return big[0]; }\n"})
    with ThreadPoolExecutor(1) as pool:
        pushed = pool.submit(work.push)
        held = wait_for(lambda: set(master.workers()) - serving, what="the roll's workers, held while it builds")
        os.kill(min(held), signal.SIGKILL)
        out = pushed.result(timeout=120)
    assert "deploy succeeded" in out, out
    assert text(server) == "v2" and server.status()["server"]["pid"] == pid
    live = {w["pid"] for w in server.status()["workers"]}
    assert len(live) == 2 and min(held) not in live
    wait_for(lambda: set(master.workers()) == live, what="no worker on the books but the serving ones")


def test_failed_health_gate_rolls_back_automatically_and_is_not_retried(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    sha = work.commit("unhealthy", {"hello.c": hello("v2", health=503)})
    out = work.push()
    assert "rollout failed: health route /health of module hello answered 503" in out
    assert "rolled back: 2 workers serve" in out and "deploy ROLLED BACK (RolloutFailed)" in out
    assert text(server) == "v1"
    assert server.cli("sync").returncode == 0
    time.sleep(1.5)
    rows = server.deploys()
    assert [d["outcome"] for d in rows if d["commit_sha"] == sha] == ["rolled_back"], "a failed commit is not retried"
    assert server.status()["state"] == "Failed" and server.status()["failure"]["reason"] == "RolloutFailed"


def test_5xx_jump_during_bake_rolls_back(up, tmp_path):
    server, work = first_deploy(up, tmp_path, bake=2.0)
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                requests.get(server.url + "/boom", timeout=2)
            except requests.RequestException:
                pass
            time.sleep(0.01)

    work.commit("errors", {"hello.c": hello("v2", boom="return HP_ERROR;")})
    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        out = work.push()
    finally:
        stop.set()
        thread.join()
    assert "rollout failed: 5xx jump:" in out and "deploy ROLLED BACK" in out, out
    assert text(server) == "v1"


def test_rollback_pins_resume_unpins_revert_commits(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    first_release = server.status()["live"]["release"]
    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    rb = server.cli("rollback")
    assert rb.returncode == 0 and f"pinned to {first_release}" in rb.stdout, rb.stdout + rb.stderr
    assert text(server) == "v1"
    status = server.cli("status")
    assert "Pinned" in status.stdout and "auto-sync is off until `hotplate resume`" in status.stdout
    work.commit("v3", {"hello.c": hello("v3")})
    out = work.push()
    assert "not deployed: live is pinned" in out and text(server) == "v1"
    assert server.cli("resume").returncode == 0
    server.wait(lambda: text(server) == "v3", what="v3 after resume")
    # revert: a new commit on the hosted branch; the tree is v2's, so no compiler runs.
    reverted = server.cli("revert")
    assert reverted.returncode == 0, reverted.stderr
    server.wait(lambda: text(server) == "v2" and server.status()["state"] == "Synced", what="revert live")
    latest = server.deploys()[0]
    assert latest["message"].startswith('Revert "v3"') and all(m["cached"] for m in latest["modules"])
    history = server.cli("history")
    assert "rollback" in history.stdout and history.returncode == 0
    logs = server.cli("logs", str(latest["id"]))
    assert "hello (hello.c): cached" in logs.stdout


def test_no_request_fails_during_deploys(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    failures, answers, stop = [], [], threading.Event()

    def client():
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    r = s.get(server.url + "/", timeout=5)
                    (answers if r.status_code == 200 else failures).append(r.status_code)
                except requests.RequestException as e:
                    failures.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for version in ("v2", "v3", "v4"):
            work.commit(version, {"hello.c": hello(version)})
            assert "deploy succeeded" in work.push()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [] and len(answers) > 50
    assert text(server) == "v4"


def test_bursts_coalesce_to_the_newest_commit(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    before = len(server.deploys())
    shas = [work.commit(f"burst {i}", {"hello.c": hello(f"b{i}")}) for i in range(10)]
    start = time.monotonic()
    for sha in shas:  # ten updates of the branch, each followed by a trigger
        server.update_branch(work, sha)
        server.sync()
    assert time.monotonic() - start < 1.5
    server.wait(lambda: server.status()["live"]["commit"] == shas[-1] and server.status()["state"] == "Synced",
                what="newest commit live")
    new = server.deploys()[: len(server.deploys()) - before]
    assert 1 <= len(new) <= 2, [d["commit_sha"] for d in new]
    assert text(server) == "b9"


def test_force_push_wrong_branch_and_deleted_branch(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    work.git("checkout", "-q", "-b", "feature")
    work.commit("feature work", {"hello.c": hello("feature")})
    out = work.git("push", "origin", "feature", check=False).stderr
    assert "refs/heads/feature is not tracked" in out and text(server) == "v1"
    work.git("checkout", "-q", "main")
    work.git("commit", "-q", "--amend", "-m", "rewritten")
    work.write({"hello.c": hello("rewritten")})
    work.git("commit", "-q", "-am", "rewritten 2")
    assert "deploy succeeded" in work.push("--force")
    assert text(server) == "rewritten"
    out = work.git("push", "origin", ":main", check=False).stderr
    assert "deleting the current branch is denied" in out, "git itself protects the deployed branch"
    assert text(server) == "rewritten"


def test_the_push_hook_starts_bare_and_reads_http_1_0(up, tmp_path):
    """The post-receive hook runs as a bare interpreter (no hotplate, no
    http.client: every push waits for it to start) and reads the API's
    HTTP/1.0 answer, a body the connection's end delimits, not chunks."""
    server, work = first_deploy(up, tmp_path)
    hook = (server.state / "repo.git" / "hooks" / "post-receive").read_text()
    assert " -I -S " in hook and "pushhook.py" in hook, hook
    script = hook.split(" -I -S ")[1].split()[0]
    live = server.status()["live"]["commit"]

    def run(token_file):
        return subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", script,
                               str(server.state / "run" / "controller.json"), str(token_file)],
                              input=f"{'0' * 40} {live} refs/heads/main\n", capture_output=True, text=True,
                              timeout=60)

    said = run(server.state / "token")  # (the push's deploy, which just ended: told whole)
    lines = said.stdout.splitlines()
    assert said.returncode == 0 and lines[0].startswith(f"hotplate: deploying {live[:12]}") and \
        lines[-1].startswith("hotplate: deploy succeeded"), said.stdout
    imported = {line.split("|")[-1].strip() for line in said.stderr.splitlines()}
    assert "_socket" in imported and not {"hotplate", "http.client", "socket"} & imported, sorted(imported)
    bad = tmp_path / "bad-token"
    bad.write_text("nope")
    refused = run(bad).stdout
    assert refused.startswith("hotplate: the controller refused: 401"), refused
    raw = subprocess.run(["curl", "-s", "-0", "-i", "-X", "POST", "-H", f"Authorization: Bearer {server.token()}",
                          f"{server.api}/api/follow?commit={live}"], capture_output=True, timeout=60).stdout
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head.lower(), head
    assert body.startswith(f"deploying {live[:12]}".encode()) and body.endswith(b" health gate\n\0hotplate: end\n"), body


def test_a_deploy_begins_as_the_ref_moves_and_a_late_hook_still_gets_its_lines(up, tmp_path):
    """The branch moved with no hook and no trigger (hosted: no poll for
    300 s) deploys all the same: the controller watches the ref. A hook
    that asks only after that deploy ended is told that deploy whole."""
    server, work = first_deploy(up, tmp_path)
    sha = work.commit("v2", {"hello.c": hello("v2")})
    server.update_branch(work, sha)
    server.wait(lambda: server.status()["live"]["commit"] == sha, what="the moved ref deployed by itself")
    assert text(server) == "v2"
    said = requests.post(server.api + f"/api/follow?commit={sha}", headers=server.auth(), timeout=30).text
    assert f"deploying {sha[:12]}" in said and "deploy succeeded" in said, said
    assert said.endswith("hotplate: end\n"), said


def test_a_push_a_force_push_replaced_says_so_at_once(up, tmp_path):
    """The pusher of a commit that a force push took off the branch before it
    deployed gets, at once, that it was replaced and how the new tip stands:
    not ten minutes of waiting for a deploy that never comes, nor a bare
    `live is ...` (issue 21)."""
    server, work = first_deploy(up, tmp_path)
    replaced = work.commit("replaced", {"hello.c": hello("a")})
    work.git("reset", "-q", "--hard", "HEAD~1")
    tip = work.commit("the new tip", {"hello.c": hello("b")})
    server.update_branch(work, replaced)  # (objects in, no hook)
    server.update_branch(work, tip)
    server.sync()
    server.wait(lambda: server.status()["live"]["commit"] == tip and server.status()["state"] == "Synced",
                what="the new tip live")
    started = time.monotonic()
    said = requests.post(server.api + f"/api/follow?commit={replaced}", headers=server.auth(), timeout=30).text
    assert time.monotonic() - started < 10, "answered at once"
    assert f"this commit is no longer on the branch (a force push put {tip[:12]} there): already live" in said, said
    assert said.rstrip("\n").endswith("hotplate: end"), "the stream's end line"


def test_controller_killed_mid_deploy_recovers(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    slow_init = hello("v2") + "HP_EXPORT int hp_init(hp_module *m) { sleep(3); return HP_OK; }\n"
    sha = work.commit("slow", {"hello.c": slow_init})
    said = []
    pusher = threading.Thread(target=lambda: said.append(work.push()))
    pusher.start()
    staging = server.wait(lambda: list((server.state / "releases").glob(".staging-*")),
                          what="a release being smoke-checked")
    server.kill()
    pusher.join()
    assert "lost the controller" in said[0] and "mid-push" in said[0], "a cut stream is no outcome: " + said[0]
    assert text(server) == "v1", "the app server keeps serving while the controller is down"
    server.start()
    assert not any(p.exists() for p in staging), "half-made releases are removed"
    server.wait(lambda: text(server) == "v2" and server.status()["state"] == "Synced", timeout=60,
                what="the interrupted commit deployed after restart")
    outcomes = {d["outcome"] for d in server.deploys() if d["commit_sha"] == sha}
    assert outcomes == {"interrupted", "succeeded"}


def test_webhooks_verify_signatures(up, tmp_path):
    from controller.webhooks import sign

    secret = tmp_path / "webhook-secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    refused = subprocess.run([sys.executable, "-m", "hotplate.controller.cli", "up", "--state", str(tmp_path / "s"),
                              "--webhook-secret-file", str(secret)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "chmod 600" in refused.stderr, "a secret others can read is refused"
    secret.chmod(0o600)
    secret.write_text(" s3cret \n")  # taken as is, it would differ from what the sender signs with: said, not stripped
    refused = subprocess.run([sys.executable, "-m", "hotplate.controller.cli", "up", "--state", str(tmp_path / "s"),
                              "--webhook-secret-file", str(secret)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "begins or ends with whitespace" in refused.stderr, refused.stderr
    secret.write_text("s3cret\n")  # one final newline, as an editor leaves it: fine
    upstream = Work(tmp_path / "upstream", "unused")  # a mirror: what moves upstream, a webhook tells
    upstream.commit("first", {"deploy.yaml": MANIFEST, "hello.c": hello("v1")})
    server = up(str(upstream.path), "--webhook-secret-file", str(secret))
    server.wait(lambda: server.get("/").status_code == 200 and text(server) == "v1", what="the first deploy")
    assert "s3cret" not in open(f"/proc/{server.proc.pid}/cmdline").read(), "never on the command line"
    hook = server.api + "/webhook"
    body = json.dumps({"ref": "refs/heads/main", "after": "x"}).encode()
    assert requests.post(hook, data=body, timeout=5).status_code == 401
    bad = requests.post(hook, data=body, headers={"X-Hub-Signature-256": sign("wrong", body)}, timeout=5)
    assert bad.status_code == 401 and "bad github signature" in bad.json()["error"]
    ping = requests.post(hook, data=b"{}", headers={"X-Hub-Signature-256": sign("s3cret", b"{}"),
                                                   "X-GitHub-Event": "ping"}, timeout=5)
    assert ping.json() == {"pong": True, "provider": "github"}
    other = json.dumps({"ref": "refs/heads/dev"}).encode()
    ignored = requests.post(hook, data=other, headers={"X-Hub-Signature-256": sign("s3cret", other),
                                                      "X-GitHub-Event": "push"}, timeout=5)
    assert ignored.status_code == 202 and "ignored" in ignored.json()
    huge = b"x" * (1024 * 1024 + 1)
    assert requests.post(hook, data=huge, headers={"X-Hub-Signature-256": sign("s3cret", huge)}, timeout=5).status_code == 413
    gitlab_bad = requests.post(hook, data=body, headers={"X-Gitlab-Token": "nope", "X-Gitlab-Event": "Push Hook"}, timeout=5)
    assert gitlab_bad.status_code == 401
    # A valid push event deploys the branch tip, asynchronously (202 at once).
    sha = upstream.commit("v2", {"hello.c": hello("v2")})
    for headers in ({"X-Gitea-Signature": sign("s3cret", body)[7:], "X-Gitea-Event": "push"},
                    {"X-Gitlab-Token": "s3cret", "X-Gitlab-Event": "Push Hook"},
                    {"X-Hotplate-Signature": sign("s3cret", body)},
                    {"X-Hub-Signature-256": sign("s3cret", body), "X-GitHub-Event": "push"}):
        r = requests.post(hook, data=body, headers=headers, timeout=5)
        assert r.status_code == 202 and r.json()["accepted"], r.text
    server.wait(lambda: server.status()["live"]["commit"] == sha, what="webhook deploy")
    assert any(d["trigger"] == "webhook" for d in server.deploys())
    signed = {"X-Hub-Signature-256": sign("s3cret", body), "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"}
    assert requests.post(hook, data=body, headers=signed, timeout=5).json()["accepted"]
    replay = requests.post(hook, data=body, headers=signed, timeout=5)
    assert replay.status_code == 200 and "seen before (a replay)" in replay.json()["ignored"]
    odd = requests.post(hook, data=body, headers={"X-Hub-Signature-256": "sha256=" + "\xe9" * 64}, timeout=5)
    assert odd.status_code == 401 and "malformed signature" in odd.json()["error"]


def test_push_over_http_needs_the_token(up, tmp_path):
    server = up()
    work = Work(tmp_path / "work", f"http://hotplate:{server.token()}@127.0.0.1:{server.api_port}/git/repo.git")
    work.commit("first", {"deploy.yaml": MANIFEST, "hello.c": hello("over http")})
    out = work.push()
    assert "remote: hotplate: deploy succeeded" in out, out
    assert text(server) == "over http"
    work.git("remote", "set-url", "origin", f"http://hotplate:wrong@127.0.0.1:{server.api_port}/git/repo.git")
    work.commit("v2", {"hello.c": hello("v2")})
    out = work.push()
    assert "401" in out or "Authentication failed" in out
    assert requests.post(server.api + "/api/sync", timeout=5).status_code == 401


def test_mirror_mode_polls_upstream(up, tmp_path):
    upstream = Work(tmp_path / "upstream", "unused")
    upstream.commit("first", {"deploy.yaml": MANIFEST, "hello.c": hello("mirrored")})
    server = up(str(upstream.path), "--poll", "0.5")
    server.wait(lambda: server.get("/").status_code == 200 and text(server) == "mirrored", what="first poll deploy")
    upstream.commit("v2", {"hello.c": hello("polled")})
    server.wait(lambda: text(server) == "polled", what="second poll deploy")
    assert {d["trigger"] for d in server.deploys()} <= {"startup", "poll"}
    upstream.git("branch", "-m", "main", "renamed")  # the tracked branch disappears upstream
    server.wait(lambda: server.status()["head"]["note"] == "the branch does not exist", what="branch missing")
    assert text(server) == "polled", "live keeps serving"


def test_diff_shows_modules_and_routes(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    pinned = server.cli("rollback", "--to", server.status()["live"]["release"])  # so that the new head waits
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    sha = work.commit("more", {"deploy.yaml": MANIFEST + "      - {path: /extra, handler: hello}\n", "hello.c": hello("v2")})
    server.update_branch(work, sha)
    data = json.loads(server.cli("diff", "--json").stdout)
    assert data["modules"] == [{"name": "hello", "source": "hello.c", "change": "rebuild"}]
    result = server.cli("diff")
    assert "rebuild   hello (hello.c)" in result.stdout and "+ route GET /extra -> hello.hello" in result.stdout, result.stdout


def test_a_tree_released_before_goes_live_as_that_release_unbuilt(up, tmp_path):
    """A revert's tree was released before, with this config set and
    toolchain: that release goes live again, with no checkout or build. The
    config set is part of what a release is made of: with another, the
    same tree is built anew."""
    server, work = first_deploy(up, tmp_path)
    first = server.status()["live"]["release"]
    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    work.git("revert", "--no-edit", "HEAD")
    out = work.push()
    assert f"release {first} recalled" in out and "hello (hello.c): cached" in out and "deploy succeeded" in out, out
    assert text(server) == "v1" and server.status()["live"]["release"] == first
    latest = server.deploys()[0]
    assert "checkout" not in latest["stages"] and "build" not in latest["stages"], latest["stages"]
    assert [m["name"] for m in latest["modules"]] == ["hello"] and latest["modules"][0]["cached"]
    done = server.cli("config", "set", "GREETING=hi", "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    work.git("revert", "--no-edit", "HEAD")  # (v2's tree again, never released with this config set)
    out = work.push()
    assert "recalled" not in out and "deploy succeeded" in out and text(server) == "v2", out


def test_retention_keeps_the_newest_releases_and_live(up, tmp_path):
    server, work = first_deploy(up, tmp_path, "--keep", "2", "--cache-mib", "0")
    for version in ("v2", "v3", "v4"):
        work.commit(version, {"hello.c": hello(version)})
        assert "deploy succeeded" in work.push()
    kept = {p.name for p in (server.state / "releases").iterdir()}
    live = server.status()["live"]["release"]
    assert live in kept and len(kept) == 2, kept
    # A cache with no room keeps exactly the objects the kept releases load.
    needed = {m["key"] for r in kept for m in json.loads((server.state / "releases" / r / "release.json").read_text())["modules"]}
    cached = {p.stem for p in (server.state / "cache" / "objects").glob("*.so")}
    assert cached == needed and len(needed) == 2, (cached, needed)
    assert {p.name for p in (server.state / "commits").iterdir() if p.exists()} <= {d["commit_sha"] for d in server.deploys()}
    work.git("revert", "--no-edit", "HEAD")
    out = work.push()
    assert "deploy succeeded" in out and "hello (hello.c): cached" in out, "a revert to a kept release compiles nothing"


def test_demo_command_imports_this_repository(up):
    """What scripts/demo runs from the project root: `hotplate up --import .`."""
    server = up("--import", ".")
    server.wait(lambda: server.status()["state"] == "Synced", what="the demo app deployed")
    assert server.get("/hello?name=Ada").status_code == 200 and "Ada" in server.get("/hello?name=Ada").text
    assert server.get("/notes/health").text == "ok\n"


def test_init_then_dev_redeploys_on_save(tmp_path):
    import subprocess
    import sys

    from websockets.sync.client import connect

    from .conftest import ROOT, free_port

    app = tmp_path / "newapp"
    made = subprocess.run([sys.executable, "-m", "hotplate.controller.cli", "init", str(app)], capture_output=True, text=True,
                          cwd=ROOT)
    assert made.returncode == 0 and (app / "deploy.yaml").exists() and (app / ".git").exists()
    port = free_port()
    log = (tmp_path / "dev.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "hotplate.controller.cli", "dev", str(app), "--bind", f"127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"

    def deployed(n: int) -> None:
        """Wait for deploy n to finish: answers seen mid-roll may come from either generation."""
        deadline = time.monotonic() + 30
        while f"deploy {n}: deploy succeeded" not in (tmp_path / "dev.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
            time.sleep(0.1)

    try:
        deployed(1)
        assert requests.get(url, timeout=5).text == "Hello, world!\n"
        with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=5) as echo:
            echo.send("before")
            assert echo.recv(timeout=5) == "before"
            source = app / "modules" / "hello.c"
            source.write_text(source.read_text().replace("Hello, %s!", "Saved, %s!"))
            deployed(2)
            assert requests.get(url, timeout=5).text == "Saved, world!\n"
            echo.send(b"after")
            assert echo.recv(timeout=5) == b"after", "the scaffold's WebSocket stayed open through the redeploy"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_before_its_first_release_a_host_answers_503_not_404(up):
    """A host joining a fleet (or a first push still building) is unavailable, not
    missing pages: a load balancer tries another host, a health check keeps it out."""
    server = up()
    page = server.get("/hello")
    assert page.status_code == 503 and page.json()["error"] == "no release is live on this host yet"
    assert page.headers["Retry-After"] == "1"
    assert server.get("/_hotplate/health").status_code == 503
