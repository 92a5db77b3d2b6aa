"""People, not one shared token: named tokens with roles, kept hashed; a
dashboard session cookie instead of a token in the page; who did what, in
the history and in the audit log."""
import json
import os
import subprocess
import sys

import requests

from .conftest import ROOT, Work
from .test_controller import MANIFEST, first_deploy, hello, text


def make(server, name: str, role: str) -> str:
    made = server.cli("token", "create", name, "--role", role, "--json")
    assert made.returncode == 0, made.stderr
    return json.loads(made.stdout)["token"]


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def test_a_viewer_reads_but_cannot_roll_back_and_the_history_names_who_did(up, tmp_path):
    server, work = first_deploy(up, tmp_path)
    work.commit("v2", {"hello.c": hello("v2")})
    assert "deploy succeeded" in work.push()
    viewer, alice = make(server, "vera", "viewer"), make(server, "alice", "deployer")
    stored = (server.state / "tokens.json").read_text()
    assert viewer not in stored and alice not in stored and '"sha256"' in stored, "kept as digests only"
    assert (server.state / "tokens.json").stat().st_mode & 0o077 == 0

    api = server.api
    assert requests.get(api + "/api/deploys", headers=bearer(viewer), timeout=5).status_code == 200
    refused = requests.post(api + "/api/rollback", headers=bearer(viewer), json={}, timeout=30)
    assert refused.status_code == 403, refused.text
    assert "'vera' is a viewer" in refused.json()["error"] and "--role deployer" in refused.json()["error"]
    assert text(server) == "v2" and not server.status()["pinned"]

    done = requests.post(api + "/api/rollback", headers=bearer(alice), json={}, timeout=60)
    assert done.status_code == 200 and done.json()["outcome"] == "succeeded", done.text
    assert text(server) == "v1"
    deploys = server.deploys()
    assert deploys[0]["trigger"] == "rollback" and deploys[0]["actor"] == "alice", deploys[0]
    assert {d["actor"] for d in deploys[1:]} == {"root"}, "the pushes name the account that pushed"
    listed = server.cli("history", "--limit", "1").stdout
    assert "alice" in listed, listed

    # the CLI acts as whoever $HOTPLATE_TOKEN names
    env = {**os.environ, "HOTPLATE_TOKEN": viewer}
    cli = subprocess.run([sys.executable, "-m", "hotplate.controller.cli", "resume", "--state", str(server.state)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)
    assert cli.returncode != 0 and "needs deployer" in cli.stderr + cli.stdout, cli

    audit = requests.get(api + "/api/audit", headers=server.auth(), timeout=5).json()
    calls = [(a["actor"], a["method"], a["path"], a["status"]) for a in audit]
    assert ("alice", "POST", "/api/rollback", 200) in calls and ("vera", "POST", "/api/rollback", 403) in calls
    assert requests.get(api + "/api/audit", headers=bearer(alice), timeout=5).status_code == 403, "admins only"
    assert "vera" in server.cli("audit").stdout

    assert server.cli("token", "revoke", "alice").returncode == 0
    assert requests.post(api + "/api/resume", headers=bearer(alice), timeout=5).status_code == 401
    listing = server.cli("token", "list").stdout
    assert "vera" in listing and "alice" not in listing and "STATE/token" in listing, listing
    bad = server.cli("token", "create", "Bad Name!", "--role", "admin")
    assert bad.returncode != 0 and "token name" in bad.stderr, bad.stderr
    twice = server.cli("token", "create", "vera")
    assert twice.returncode != 0 and "exists" in twice.stderr, twice.stderr


def test_a_push_over_http_names_its_token_and_a_viewer_may_fetch_but_not_push(up, tmp_path):
    server = up()
    ci, viewer = make(server, "ci-bot", "deployer"), make(server, "vera", "viewer")
    work = Work(tmp_path / "work", f"http://x:{ci}@127.0.0.1:{server.api_port}/git/repo.git")
    sha = work.commit("first", {"deploy.yaml": MANIFEST, "hello.c": hello("v1")})
    assert "remote: hotplate: deploy succeeded" in work.push()
    assert server.deploys()[0]["actor"] == "ci-bot" and server.deploys()[0]["commit_sha"] == sha

    work.git("remote", "set-url", "origin", f"http://x:{viewer}@127.0.0.1:{server.api_port}/git/repo.git")
    assert work.git("fetch", "origin", check=False).returncode == 0, "a viewer may fetch"
    work.commit("v2", {"hello.c": hello("v2")})
    out = work.push()
    assert "403" in out and text(server) == "v1", out
    # a token other than the hook's cannot say someone else pushed
    said = requests.post(server.api + f"/api/follow?commit={sha}&pusher=mallory", headers=bearer(ci), timeout=30)
    assert "deploy succeeded" in said.text and server.deploys()[0]["actor"] == "ci-bot"


def test_the_dashboard_session_is_a_cookie_scripts_cannot_read_and_needs_its_csrf_token(up, tmp_path):
    server, _ = first_deploy(up, tmp_path)
    alice = make(server, "alice", "deployer")
    api = server.api
    assert requests.post(api + "/api/session", data=json.dumps({"token": alice}),
                         headers={"Content-Type": "text/plain"}, timeout=5).status_code == 400, "JSON only"
    assert requests.post(api + "/api/session", json={"token": "hp_wrong"}, timeout=5).status_code == 401

    browser = requests.Session()
    signed = browser.post(api + "/api/session", json={"token": alice}, timeout=5)
    assert signed.status_code == 200 and signed.json()["name"] == "alice", signed.text
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and alice not in cookie, cookie
    csrf = signed.json()["csrf"]
    assert browser.get(api + "/api/deploys", timeout=5).status_code == 200
    assert browser.get(api + "/api/session", timeout=5).json() == {"name": "alice", "role": "deployer", "csrf": csrf}

    forged = browser.post(api + "/api/restart", timeout=30)  # another site's form: the cookie, no header
    assert forged.status_code == 403 and forged.json()["reason"] == "CSRF", forged.text
    assert browser.post(api + "/api/restart", headers={"X-CSRF-Token": csrf}, timeout=60).json()["outcome"] == \
        "succeeded"
    assert server.deploys()[0]["actor"] == "alice"

    assert server.cli("token", "revoke", "alice").returncode == 0  # revoking ends its sessions
    assert browser.get(api + "/api/deploys", timeout=5).status_code == 401
    browser.close()
