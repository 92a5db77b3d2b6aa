"""The CLI for CI jobs and scripts (issue 12): wait, --wait, --exit-code,
logs of the latest deploy, --version."""
import json
import os
import pty
import re
import subprocess
import sys
import time
import tomllib

import requests

from hotplate.server.paths import HEADER

from .conftest import ROOT, free_port
from .test_controller import first_deploy, hello, text


def test_wait_and_exit_codes_tell_a_ci_job_what_happened(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    assert server.cli("status", "--exit-code").returncode == 0
    assert server.cli("diff", "--exit-code").returncode == 0, "the head is live: nothing to deploy"
    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()

    assert server.cli("rollback").returncode == 0  # to v1, pinned: the next head waits
    good = work.commit("v3", {"hello.c": hello("v3")})
    server.update_branch(work, good)
    assert server.cli("diff", "--exit-code").returncode == 1, "something to deploy"
    started = time.monotonic()
    pinned = server.cli("wait", "--commit", good, "--timeout", "60")
    assert pinned.returncode == 3 and "pinned" in pinned.stdout, pinned
    assert time.monotonic() - started < 10, "a pinned head is said at once, not at the timeout"
    resumed = server.cli("resume", "--wait", "--timeout", "60")
    assert resumed.returncode == 0 and f"live: {good[:12]}" in resumed.stdout, resumed
    assert text(server) == "v3"
    assert server.cli("wait", "--for", "healthy", "--commit", good, "--timeout", "60").returncode == 0
    timed_out = server.cli("wait", "--commit", "0" * 40, "--timeout", "1")
    assert timed_out.returncode == 2 and "timed out after 1s" in timed_out.stdout, timed_out

    bad = work.commit("broken", {"hello.c": "this is not C\n"})
    server.update_branch(work, bad)
    synced = server.cli("sync", "--wait", "--timeout", "60")
    assert synced.returncode == 1 and f"FAILED: {bad[:12]}: deploy" in synced.stdout and "BuildFailed" in synced.stdout
    assert server.cli("status", "--exit-code").returncode == 1, "Failed"
    logs = server.cli("logs")
    assert logs.returncode == 0 and "failed" in logs.stdout.splitlines()[0] and "this is not C" in logs.stdout
    assert text(server) == "v3", "live kept serving"
    unhealthy = work.commit("unhealthy", {"hello.c": hello("v4", health=500)})
    server.update_branch(work, unhealthy)
    gated = server.cli("sync", "--wait", "--timeout", "60", "--json")  # (sync's answer, then wait's)
    said = json.JSONDecoder().raw_decode(gated.stdout[gated.stdout.index("}\n{") + 2:])[0]
    assert gated.returncode == 1 and said["outcome"] == "rolled_back", "wait --json says what history records"
    assert server.deploys()[0]["outcome"] == "rolled_back"
    server.kill()  # kill -9: its record says it runs, nobody answers
    gone = server.cli("wait", "--timeout", "60")
    assert gone.returncode == 4 and "cannot reach the controller" in gone.stdout, gone


def test_one_version_everywhere():
    out = subprocess.run([sys.executable, "-m", "hotplate.controller.cli", "--version"], capture_output=True,
                         text=True, cwd=ROOT).stdout.strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    header = re.search(r'#define HP_VERSION "([^"]+)"', HEADER.read_text()).group(1)
    assert out == f"hotplate {project}" and project == header


def test_releases_list_and_rollback_says_from_and_to(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    first = server.status()["live"]
    work.commit("second one", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    second = server.status()["live"]
    rows = json.loads(server.cli("releases", "--json").stdout)
    assert [(r["release"], r["commit"], r["live"]) for r in rows] == [
        (second["release"], second["commit"], True), (first["release"], first["commit"], False)]
    assert rows[0]["message"] == "second one"
    listing = server.cli("releases").stdout
    assert "LIVE" in listing and "second one" in listing and first["commit"][:12] in listing

    rolled = server.cli("rollback", "--wait", "--timeout", "60")
    assert rolled.returncode == 0 and f"live: {first['commit'][:12]}" in rolled.stdout, rolled.stdout
    assert (f"rolling back from {second['release']} (commit {second['commit'][:12]}) "
            f"to {first['release']} (commit {first['commit'][:12]})") in rolled.stdout, rolled.stdout
    assert "LIVE (pinned)" in server.cli("releases").stdout
    assert server.deploys()[0]["commit_sha"] == first["commit"], "the rollback's row shows its commit"


def test_read_only_commands_create_nothing_and_print_one_line(tmp_path):
    state = tmp_path / "nowhere"
    for command in (["status"], ["history"], ["logs"], ["releases"], ["wait", "--timeout", "1"]):
        r = subprocess.run([sys.executable, "-m", "hotplate.controller.cli", *command, "--state", str(state)],
                           capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 1 and r.stderr.startswith("error: no controller is running") and \
            len(r.stderr.splitlines()) == 1, r
    assert not state.exists()


def test_init_never_overwrites_and_uses_the_branch(tmp_path):
    def init(*args):
        return subprocess.run([sys.executable, "-m", "hotplate.controller.cli", "init", *args], capture_output=True,
                              text=True, cwd=ROOT)

    app = tmp_path / "app"
    assert init(str(app), "--branch", "live").returncode == 0
    assert subprocess.run(["git", "-C", str(app), "branch", "--show-current"], capture_output=True,
                          text=True).stdout.strip() == "live"
    (app / "modules" / "hello.c").write_text("/* mine */\n")
    again = init(str(app))
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "exists already; pass --force" in again.stderr
    assert (app / "modules" / "hello.c").read_text() == "/* mine */\n"
    assert init(str(app), "--force").returncode == 0 and "hp_req_query" in (app / "modules" / "hello.c").read_text()


def test_logs_follow_a_deploy_and_tail_the_app(up, tmp_path):
    server, work = first_deploy(up, tmp_path, bake=2.0)
    sha = work.commit("v2", {"hello.c": hello("v2", boom="return HP_ERROR;")})
    server.update_branch(work, sha)
    server.sync()
    server.wait(lambda: server.status()["progressing"], what="the deploy to start")
    followed = server.cli("logs", "--follow")
    lines = followed.stdout.splitlines()
    assert followed.returncode == 0 and any("baking for 2s" in line for line in lines), followed.stdout
    assert "deploy succeeded" in lines[-1], "followed to the end"

    assert server.get("/boom").status_code == 500
    server.wait(lambda: "returned HP_ERROR" in server.cli("logs", "--app", "--module", "hello", "--route", "/boom").stdout,
                what="the handler's error in the app log")
    assert "returned HP_ERROR" not in server.cli("logs", "--app", "--module", "other").stdout


def test_dev_rebuilds_on_sources_only_and_shows_a_failed_save_in_the_browser(tmp_path):
    app = tmp_path / "app"
    assert subprocess.run([sys.executable, "-m", "hotplate.controller.cli", "init", str(app)], cwd=ROOT).returncode == 0
    port = free_port()
    log = tmp_path / "dev.log"
    proc = subprocess.Popen([sys.executable, "-m", "hotplate.controller.cli", "dev", str(app), "--bind",
                             f"127.0.0.1:{port}", "--workers", "1"], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"

    def deploys() -> int:
        return len(re.findall(r"deploy \d+: (?:deploy succeeded|deploy FAILED)", log.read_text()))

    def until(predicate, what: str):
        deadline = time.monotonic() + 30
        while not predicate():
            assert time.monotonic() < deadline and proc.poll() is None, f"{what}:\n{log.read_text()}"
            time.sleep(0.05)

    try:
        until(lambda: deploys() == 1, "the first deploy")
        (app / "NOTES.md").write_text("notes\n")
        (app / "modules" / ".hello.c.swp").write_text("swap")
        (app / "modules" / "hello.c~").write_text("backup")
        source = app / "modules" / "hello.c"
        good = source.read_text().replace("Hello, %s!", "Hi, %s!")
        source.write_text(good + "int broken = ;\n")
        until(lambda: deploys() == 2, "the broken save")
        assert "changed: modules/hello.c\n" in log.read_text(), "only the source triggered it, and it is named"
        until(lambda: requests.get(url, timeout=5).status_code == 500, "the error page (written once the deploy ended)")
        page = requests.get(url + "?name=x", timeout=5)
        assert page.status_code == 500 and "did not go live" in page.text and "hello.c:" in page.text, page.text
        assert "error:" in page.text, "gcc's diagnostics are on the page"
        assert requests.get(url + "_hotplate/health", timeout=5).status_code == 200, "the server's own paths answer"

        source.write_text(good)
        until(lambda: deploys() == 3, "the fixed save")
        until(lambda: requests.get(url + "?name=x", timeout=5).text == "Hi, x!\n", "the error page gone")
        (app / "modules" / "hello.c").touch()  # saved again, same content: same release
        until(lambda: "is live already: nothing to roll" in log.read_text(), "an unchanged release")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_json_errors_completion_and_colour_only_on_a_terminal(up, tmp_path):
    cli = [sys.executable, "-m", "hotplate.controller.cli"]
    nowhere = subprocess.run([*cli, "status", "--json", "--state", str(tmp_path / "none")], capture_output=True,
                             text=True, cwd=ROOT)
    assert nowhere.returncode == 1 and json.loads(nowhere.stdout)["error"].startswith("no controller is running")

    out = tmp_path / "completions"
    subprocess.run(cli, cwd=ROOT, env={**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": "hotplate sta",
                                      "COMP_POINT": "12", "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}, check=True)
    assert "status" in out.read_text().split()

    server, _ = first_deploy(up, tmp_path)
    piped = server.cli("status").stdout
    assert "state:    Synced" in piped and "\033[" not in piped, "plain in a pipe"
    leader, follower = pty.openpty()
    subprocess.run([*cli, "status", "--state", str(server.state)], stdout=follower, cwd=ROOT, timeout=60)
    os.close(follower)
    shown = os.read(leader, 65536).decode()
    os.close(leader)
    assert "\033[32m✓ Synced\033[0m" in shown and "\033[32m✓ Healthy" in shown, shown
