"""Faults of every kind end a deploy with a recorded outcome and a final line,
the app keeps serving (or comes back by itself), and status tells the truth.

Real processes throughout: real git pushes, real kill -9, a real tmpfs for a
full disk, two real ``hotplate up`` on one state directory.
"""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from .conftest import ROOT, free_port
from .test_controller import MANIFEST, first_deploy, hello, text

#: Seconds within which a push must come back with its final line.
PUSH_LIMIT = 30


def timed_push(work) -> tuple[str, float]:
    start = time.monotonic()
    out = work.push()
    return out, time.monotonic() - start


def last_deploy(server) -> dict:
    return server.deploys()[0]


def test_bad_trees_fail_with_a_reason_and_live_keeps_serving(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    cases = {
        "ManifestInvalid": lambda: work.write({"deploy.yaml": MANIFEST.replace("{path: /, handler: hello}",
                                                                               "{path: /a/<int:n>/<int:n>, handler: hello}")}),
        "UnsafeTree": lambda: os.symlink("/etc/passwd", work.path / "passwd"),
    }
    for reason, change in cases.items():
        work.git("reset", "-q", "--hard", "HEAD")
        change()
        work.commit(reason)
        out, took = timed_push(work)
        assert f"deploy FAILED ({reason})" in out and took < PUSH_LIMIT, out
        assert text(server) == "v1"
        row = last_deploy(server)
        assert row["outcome"] == "failed" and row["reason"] == reason, row
    assert "each name once" in row_detail(server, "ManifestInvalid")

    os.symlink("../../../../etc", work.path / "escape")
    work.commit("escaping link")
    out, took = timed_push(work)
    assert "deploy FAILED (UnsafeTree)" in out and took < PUSH_LIMIT, out
    assert "2 entries" in out and "  passwd:" in out and "  escape:" in out, "every bad link, one push"
    work.git("rm", "-q", "passwd", "escape")

    work.git("rm", "-rq", ".")
    work.commit("empty tree")
    out, took = timed_push(work)
    assert "deploy FAILED (ManifestInvalid)" in out and "deploy.yaml" in out and took < PUSH_LIMIT, out
    assert text(server) == "v1" and server.status()["state"] == "Failed"
    assert server.status()["health"]["state"] == "Healthy"

    work.commit("fixed", {"deploy.yaml": MANIFEST, "hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    assert text(server) == "v2" and server.status()["state"] == "Synced"
    assert list((server.state / "src").iterdir()) == [], "every checkout is removed"


def row_detail(server, reason: str) -> str:
    return next(d["detail"] for d in server.deploys() if d["reason"] == reason)


@pytest.mark.parametrize("where,files", [
    ("src", {"data.txt": "x" * 1024 * 1024}),  # the checkout
    ("cache", {}),  # the compiler's output
])
def test_full_disk_is_retried_with_backoff_until_it_passes(up, tmp_path, where, files):
    server, work = first_deploy(up, tmp_path)
    full = server.state / where
    full.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(full)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        work.commit("big", {"hello.c": hello("v2"), **files})
        out, took = timed_push(work)
        assert "deploy FAILED (DiskFull, not the commit's fault): retrying in 1s" in out and took < PUSH_LIMIT, out
        assert text(server) == "v1"
        row = last_deploy(server)
        assert row["outcome"] == "errored" and "No space left on device" in row["detail"]
        assert server.status()["state"] in ("Retrying", "Progressing")
    finally:
        subprocess.run(["umount", str(full)], check=True)
    server.wait(lambda: text(server) == "v2" and server.status()["state"] == "Synced", what="the retry after the disk cleared")
    outcomes = [d["outcome"] for d in server.deploys() if d["message"] == "big"]
    assert outcomes[0] == "succeeded" and set(outcomes[1:]) == {"errored"}, outcomes


def test_killed_app_server_is_restarted_and_status_tells(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    master = int((server.state / "run" / "server.pid").read_text())
    os.kill(master, signal.SIGKILL)
    killed = time.monotonic()
    down = server.wait(lambda: (s := server.status())["health"]["state"] == "Down" and s, timeout=5,
                       what="status saying Down")
    assert "killed by SIGKILL" in down["health"]["why"][0], down["health"]
    server.wait(lambda: server.status()["health"]["state"] == "Healthy", timeout=15, what="the server back")
    back = time.monotonic() - killed
    assert text(server) == "v1" and back < 15
    assert "hotplate_up 0" in down_metrics(server)
    server.wait(lambda: server.status()["health"]["state"] == "Healthy", timeout=15, what="the server back again")
    s = server.status()
    assert s["server"]["restarts"] == 2 and s["server"]["pid"] != master and s["state"] == "Synced"
    metrics = requests.get(server.api + "/metrics", timeout=5).text
    assert "hotplate_up 1" in metrics and "hotplate_server_restarts_total 2" in metrics
    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    answers = {text(server) for _ in range(8)}  # (a dead master's workers stopped accepting: none answers v1)
    assert answers == {"v2"}, answers


def test_status_answers_while_the_master_does_not(up, tmp_path):
    """A master that does not run (stopped here; busy forking on a bad day)
    accepts on its control socket and never answers: status, /metrics and the
    dashboard's API answer anyway, each within the client's 5 s timeout."""
    server, work = first_deploy(up, tmp_path)
    master = int((server.state / "run" / "server.pid").read_text())
    os.kill(master, signal.SIGSTOP)
    try:
        for _ in range(3):
            s = server.status()  # (a ReadTimeout fails the test)
            assert s["live"]["commit"] and s["server"]["pid"] == master, s
        assert "hotplate_up 1" in requests.get(server.api + "/metrics", timeout=5).text
    finally:
        os.kill(master, signal.SIGCONT)
    assert server.status()["health"]["state"] == "Healthy" and text(server) == "v1"


def down_metrics(server) -> str:
    """/metrics while the master is down (the window lasts as long as its restart)."""
    os.kill(int((server.state / "run" / "server.pid").read_text()), signal.SIGKILL)
    return server.wait(lambda: 'hotplate_health{state="Down"} 1' in (m := requests.get(
        server.api + "/metrics", timeout=5).text) and m, timeout=5, what="metrics saying Down")


def test_deploy_waits_visibly_for_a_dead_server(up, tmp_path):
    """A push that lands while the master is down ends, and says what it
    waited for; the dead master's workers, busy with keep-alive clients, do
    not hold up the roll. (Its workers are stopped meanwhile: they hold the
    port, so no new master can start until they go, and the push meets the
    server down however fast the restart would be.)"""
    server, work = first_deploy(up, tmp_path)
    work.commit("v2", {"hello.c": hello("v2")})
    stop = threading.Event()

    def client():
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    s.get(server.url + "/", timeout=5)
                except requests.RequestException:
                    pass

    clients = [threading.Thread(target=client) for _ in range(3)]
    for c in clients:
        c.start()
    master = int((server.state / "run" / "server.pid").read_text())
    workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                                              text=True).stdout.split()]
    try:
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        os.kill(master, signal.SIGKILL)
        started = time.monotonic()
        push = subprocess.Popen(["git", "push", "origin", "main"], cwd=work.path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        out = ""
        for line in push.stdout:
            out += line
            if "the app server is down" in line:
                for pid in workers:
                    os.kill(pid, signal.SIGCONT)
        push.wait()
        took = time.monotonic() - started
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        stop.set()
        for c in clients:
            c.join()
    assert "deploy succeeded" in out and took < 10, (took, out)
    assert "the app server is down (the gunicorn master was killed by SIGKILL)" in out and "the app server is back" in out
    assert text(server) == "v2"


def test_a_second_controller_on_one_state_exits_at_once(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    info = (server.state / "run" / "controller.json").read_text()
    for command in (["up", "--api", f"127.0.0.1:{free_port()}"], ["dev", str(tmp_path)]):
        start = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "hotplate.controller.cli", *command, "--state", str(server.state),
                                 "--bind", f"127.0.0.1:{free_port()}"],
                                capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert second.returncode == 1 and time.monotonic() - start < 10
        assert f"already running (hotplate up, pid {server.proc.pid})" in second.stderr, second.stderr
    assert (server.state / "run" / "controller.json").read_text() == info
    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push() and text(server) == "v2"


CRASH = "*(volatile int *)0 = 1; return HP_OK;"


def test_dead_workers_do_not_lie_and_their_counts_survive(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    work.commit("crashy", {"hello.c": hello("v2", boom=CRASH)})
    assert "deploy succeeded" in work.push()
    for _ in range(3):
        assert server.get("/boom").status_code == 500
        server.wait(lambda: len([w for w in server.status()["workers"]]) == 2, what="the crashed worker replaced")
    server.wait(lambda: server.status()["exited_workers"]["crashes"] == 3, what="crash counts kept")
    victim = server.status()["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)  # as the OOM killer would
    server.wait(lambda: victim not in {w["pid"] for w in server.status()["workers"]}
                and len(server.status()["workers"]) == 2, what="the killed worker replaced")
    assert not (server.state / "run" / "workers" / f"{victim}.json").exists()
    s = server.status()
    assert s["exited_workers"]["crashes"] == 3 and s["health"]["state"] == "Healthy"
    metrics = requests.get(server.api + "/metrics", timeout=5).text
    assert 'hotplate_handler_crashes_total{module="hello"} 3.0' in metrics, "exited workers' counts kept"
    # A commit that changes no module reuses the live release: no crash loop is seen.
    work.commit("docs only", {"README": "docs\n"})
    out = work.push()
    assert "deploy succeeded" in out and "reused" in out, out
    rolled = server.cli("rollback")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr


def test_damaged_database_is_set_aside_and_the_pin_kept(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    assert server.cli("rollback").returncode == 0
    pinned = server.status()["pinned"]
    for damage, said in ((b"", "was empty (0 bytes)"), (b"garbage" * 100, "is not an SQLite database")):
        server.kill()
        db = server.state / "hotplate.db"
        for suffix in ("-wal", "-shm"):
            (server.state / f"hotplate.db{suffix}").unlink(missing_ok=True)
        db.write_bytes(damage)
        server.start()
        s = server.status()
        assert said in s["notices"][0] and "history before now is lost" in s["notices"][0], s["notices"]
        assert s["pinned"] == pinned and s["state"] == "Pinned" and text(server) == "v1"
        assert "Traceback" not in server.log.read_text()
        assert "NOTICE:" in server.cli("status").stdout
    assert len(list(server.state.glob("hotplate.db.damaged-*"))) >= 1
    (server.state / "hotplate.db").write_bytes(b"garbage" * 100)  # damaged while it runs: releases still answer
    listed = requests.get(server.api + "/api/releases", headers=server.auth(), timeout=5)
    assert listed.status_code == 200 and all(r["passed"] is None for r in listed.json()), listed.text
    assert "never passed" not in server.cli("releases").stdout, "not known is not said as never"


def test_unauthenticated_reads_change_nothing_and_show_no_logs(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    work.commit("broken", {"hello.c": hello("v2").replace("return hp_res_printf", "return hp_res_printf(")})
    work.push()
    for path in ("/api/diff", "/api/deploys", "/api/deploys/1"):
        assert requests.get(server.api + path, timeout=5).status_code == 401, path
    public = requests.get(server.api + "/api/status", timeout=5).json()
    assert public["state"] == "Failed" and public["failure"]["detail"] is None
    assert "hello.c" not in requests.get(server.api + "/api/status", timeout=5).text.replace('"hello.c"', "")
    assert server.status()["failure"]["detail"], "the token shows the detail"


def test_operator_commands_say_what_they_do(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    v1 = server.status()["live"]["release"]
    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    resumed = server.cli("resume")
    assert resumed.returncode == 1 and "nothing happened: live was not pinned" in resumed.stdout
    assert server.cli("rollback").returncode == 0 and server.status()["live"]["release"] == v1
    synced = server.cli("sync")
    assert synced.returncode == 1 and "nothing happened: live is pinned" in synced.stdout
    assert server.cli("resume").returncode == 0
    server.wait(lambda: text(server) == "v2" and server.status()["state"] == "Synced", what="v2 after resume")
    reverted = server.cli("revert")
    assert reverted.returncode == 0 and "git pull" in reverted.stdout, reverted.stderr
    server.wait(lambda: text(server) == "v1" and server.status()["state"] == "Synced", what="the revert live")
    again = server.cli("revert")
    assert again.returncode == 1 and "is itself a revert" in again.stderr and "--force" in again.stderr
    unknown = server.cli("revert", "--commit", "0123456789abcdef")
    assert unknown.returncode == 1 and "unknown commit" in unknown.stderr
    assert server.cli("revert", "--force").returncode == 0
    server.wait(lambda: text(server) == "v2" and server.status()["state"] == "Synced", what="the revert of the revert")


def test_rollback_during_a_deploy_waits_then_goes_one_back(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    v2 = server.status()["live"]["release"]
    work.commit("v3 slow", {"hello.c": hello("v3") + "HP_EXPORT int hp_init(hp_module *m) { sleep(2); return HP_OK; }\n"})
    pusher = threading.Thread(target=work.push)
    pusher.start()
    server.wait(lambda: server.status()["progressing"], what="the slow deploy")
    rolled = server.cli("rollback")
    pusher.join()
    assert rolled.returncode == 0 and "waiting for deploy" in rolled.stdout, rolled.stdout + rolled.stderr
    assert server.status()["live"]["release"] == v2 and text(server) == "v2"


def test_retry_redeploys_a_commit_that_failed_for_an_outside_reason(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    outside = hello("v2").replace("hp_res_status(res, 200);",
                                  'hp_res_status(res, access("downstream-ok", F_OK) ? 503 : 200);')
    work.commit("needs downstream", {"hello.c": outside})
    assert "deploy ROLLED BACK" in work.push()
    (server.state / "data" / "downstream-ok").touch()  # the outage is over (workers run in STATE/data)
    retried = server.cli("retry")
    assert retried.returncode == 0, retried.stderr
    server.wait(lambda: text(server) == "v2" and server.status()["state"] == "Synced", what="the retry live")
    assert last_deploy(server)["trigger"] == "retry"


def test_an_unplanned_exception_ends_the_deploy_with_its_traceback(up, tmp_path):
    """Damage nobody planned for (a retained release emptied of its
    release.json by hand): the deploy that needs it ends `failed` with the
    exception and traceback in its log, the push gets its final line, and
    live keeps serving."""
    server, work = first_deploy(up, tmp_path)
    v1 = server.status()["live"]["release"]
    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    (server.state / "releases" / v1 / "release.json").unlink()
    work.git("revert", "--no-edit", "HEAD")
    out, took = timed_push(work)
    assert "deploy FAILED (InternalError); live stays on" in out and took < PUSH_LIMIT, out
    row = last_deploy(server)
    assert row["outcome"] == "failed" and row["reason"] == "InternalError"
    assert "Traceback (most recent call last)" in row["log"] and "OSError" in row["detail"]
    assert text(server) == "v2" and server.status()["health"]["state"] == "Healthy"


def test_a_push_the_controller_cannot_record_still_gets_an_answer(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    db = server.state / "hotplate.db"
    db.rename(tmp_path / "saved.db")
    db.mkdir()  # history cannot be opened: not a deploy's fault, nothing is recorded
    work.commit("v2", {"hello.c": hello("v2")})
    out, took = timed_push(work)
    assert "not deployed: the controller failed before deploying it" in out and took < PUSH_LIMIT, out
    assert "unable to open database file" in out and text(server) == "v1"
    assert "unable to open database file" in server.status()["last_error"]
    db.rmdir()
    (tmp_path / "saved.db").rename(db)
    work.commit("v3", {"hello.c": hello("v3")})
    assert "deploy succeeded" in work.push() and text(server) == "v3"


def test_the_state_directory_is_the_controllers_alone(up, tmp_path):
    server, _ = first_deploy(up, tmp_path)
    assert (server.state.stat().st_mode & 0o777) == 0o711, "others may pass through to the releases, not list"
    for private in ("repo.git", "cache"):
        assert ((server.state / private).stat().st_mode & 0o777) == 0o700, private
    assert ((server.state / "token").stat().st_mode & 0o777) == 0o600
    assert ((server.state / "hotplate.db").stat().st_mode & 0o777) == 0o600


POISONED_INIT = """
HP_EXPORT int hp_init(hp_module *m) { return access("poison", F_OK) == 0 ? HP_ERROR : HP_OK; }
"""


def test_workers_that_cannot_load_are_rolled_again_never_said_to_pass(up, tmp_path):
    """A module whose hp_init fails only in the workers (their directory,
    not the smoke check's, holds what makes it fail): the gate rolls back to
    a release that fails the same way, and the app is Degraded. A push of
    the same tree then rolls fresh workers (it used to say "nothing to roll"
    and "passed its health gate"), and fails while the cause stays."""
    server, work = first_deploy(up, tmp_path)
    work.commit("v2", {"hello.c": hello("v2") + POISONED_INIT})
    assert "deploy succeeded" in work.push()
    poison = server.state / "data" / "poison"
    poison.write_text("")
    os.chown(poison, (server.state / "data").stat().st_uid, -1)
    work.commit("v3", {"hello.c": hello("v3") + POISONED_INIT})
    out = work.push()
    assert "ROLLED BACK" in out, out
    server.wait(lambda: server.status()["health"]["state"] in ("Degraded", "Down"), what="the app Degraded")
    work.commit("v2 again", {"hello.c": hello("v2") + POISONED_INIT})  # the tree live serves
    out = work.push()
    assert "did not load in its workers: rolling fresh ones" in out and "passed its health gate" not in out, out
    restarted = server.cli("restart")
    assert restarted.returncode == 1 and "restart FAILED" in restarted.stdout + restarted.stderr, restarted
    poison.unlink()  # the operator mends the cause: one command rolls fresh workers, no push, no kill -HUP
    restarted = server.cli("restart", "--wait")
    assert restarted.returncode == 0 and "deploy succeeded" in restarted.stdout, restarted
    assert server.status()["health"]["state"] == "Healthy" and text(server) == "v2"


DIRECTORY_INIT = """
#include <fcntl.h>
HP_EXPORT int hp_init(hp_module *m) {
    int fd = open("db/notes.log", O_CREAT | O_WRONLY | O_APPEND, 0600);  /* the workers' layout */
    if (fd < 0) return HP_ERROR;
    close(fd);
    return HP_OK;
}
"""


def test_the_smoke_check_runs_in_the_workers_layout(up, tmp_path):
    """hp_init that opens a file in a subdirectory of the workers' directory
    passes the smoke check as it passes the workers (issue 21: the check ran
    in an empty directory and refused what the workers would run); what the
    check writes stays out of the workers' directory."""
    server, work = first_deploy(up, tmp_path)
    data = server.state / "data"
    (data / "db").mkdir()
    os.chown(data / "db", data.stat().st_uid, data.stat().st_gid)
    os.symlink("/", data / "planted")  # (a link module code made: never walked into)
    os.mkfifo(data / "fifo")  # ... nor a FIFO opened
    many = data / "many"
    many.mkdir()
    for i in range(20_000):  # ... and a directory of many files read only so far, not to the end
        (many / f"f{i}").touch()
    work.commit("v2", {"hello.c": hello("v2") + DIRECTORY_INIT})
    out = work.push()
    assert "deploy succeeded" in out, out
    assert (data / "db" / "notes.log").exists() and text(server) == "v2"
    assert not list(server.state.glob("releases/.smoke-*")), "the check's directory is gone"
    assert "could not lay out" not in server.log.read_text()


LOGGING_INIT = """
HP_EXPORT int hp_init(hp_module *m) {
    hp_module_log(m, HP_LOG_ERROR, "cannot open the notes database: %s", "permission denied");
    return HP_ERROR;
}
"""


def test_what_a_failing_hp_init_logged_goes_with_its_error(up, tmp_path):
    """The lines a module logs from a failing hp_init are in the push's
    output and the deploy's log, not only in the controller's (issue 21)."""
    server, work = first_deploy(up, tmp_path)
    work.commit("v2", {"hello.c": hello("v2") + LOGGING_INIT})
    out = work.push()
    said = "| cannot open the notes database: permission denied"
    assert "deploy FAILED (SmokeCheckFailed)" in out and said in out and "which said:" in out, out
    assert said in server.cli("logs").stdout
    assert text(server) == "v1"


def test_a_release_that_failed_its_gate_is_recorded_and_marked(up, tmp_path):
    """history names the release a rolled-back deploy made (it showed "-"),
    and `releases` says which never passed its gate: no place to roll back to."""
    server, work = first_deploy(up, tmp_path)
    work.commit("unhealthy", {"hello.c": hello("v2", health=500)})
    assert "ROLLED BACK" in work.push()
    row = last_deploy(server)
    assert row["outcome"] == "rolled_back" and row["release"] and row["release"] != server.status()["live"]["release"]
    listed = {r["release"]: r for r in requests.get(server.api + "/api/releases", headers=server.auth(), timeout=5).json()}
    assert listed[row["release"]]["passed"] is False and listed[server.status()["live"]["release"]]["passed"] is True
    assert "never passed its health gate" in server.cli("releases").stdout
    assert row["release"] in server.cli("history").stdout
    back = server.cli("rollback", "--to", row["release"])  # (it fails its gate again: unhealthy)
    assert f"to {row['release']} (commit {row['commit_sha'][:12]})" in back.stdout, back.stdout


def test_commits_read_from_many_threads_at_once_come_back_right(tmp_path):
    """The loop's deploy and the API's status read commits at once, through
    GitPython's one `git cat-file` process per repository: unguarded, four
    threads hung within 300 reads each. Every answer is the right one, and
    none waits forever."""
    from hotplate.controller.source import Source
    from hotplate.controller.state import State

    state = State(tmp_path / "state")
    state.root.mkdir(parents=True)
    source = Source(state)
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    shas = []
    for i in range(6):
        (work / "f.txt").write_text(f"{i}\n" * (i * 3000))  # (contents of many sizes: reads of many lengths)
        subprocess.run(["git", "-C", str(work), "add", "."], check=True)
        subprocess.run(["git", "-C", str(work), "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm",
                        f"commit {i}"], check=True)
        shas.append(subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True,
                                   check=True).stdout.strip())
    subprocess.run(["git", "-C", str(work), "push", "-q", str(state.repo), "HEAD:main"], check=True,
                   capture_output=True)

    def answers(sha: str) -> tuple:
        return source.commit_info(sha)["message"], source.tree(sha), source.blob(sha, "f.txt")

    expected = {sha: answers(sha) for sha in shas}
    wrong = []

    def read(k: int) -> None:
        for n in range(200):
            sha = shas[(n + k) % len(shas)]
            try:
                got = answers(sha)
            except Exception as e:
                got = repr(e)
            if got != expected[sha]:
                wrong.append((sha, str(got)[:100]))

    threads = [threading.Thread(target=read, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "readers still waiting after 60 s"
    assert not wrong, wrong[:3]
