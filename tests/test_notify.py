"""Outgoing notifications (issue 12): a real HTTP receiver on loopback that
checks the signature, fails the first delivery on purpose, and records what
arrives."""
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .conftest import free_port
from .test_controller import first_deploy

SECRET = "notify-s3cret"
TOKEN = "status-t0ken"


class Receiver(ThreadingHTTPServer):
    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.events: list[tuple[str, dict]] = []
        self.refused = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        receiver = self.server
        if "/statuses/" in self.path:  # a forge's commit status API: the token, or 401
            auth = self.headers.get("Authorization") or self.headers.get("PRIVATE-TOKEN")
            if auth not in (f"Bearer {TOKEN}", TOKEN):
                return self.answer(401)
            receiver.events.append((self.path, json.loads(body) if body else {}))
            return self.answer(201)
        if self.path == "/hook":
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, self.headers.get("X-Hotplate-Signature", "")):
                return self.answer(401)
            if receiver.refused == 0:  # the first delivery fails: it must be retried
                receiver.refused += 1
                return self.answer(503)
        receiver.events.append((self.path, json.loads(body)))
        self.answer(200)

    def answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.shutdown()


def test_deploys_are_notified_signed_retried_and_logged(up, tmp_path, receiver):
    down = f"http://127.0.0.1:{free_port()}/down"  # a receiver that is down delays only its own events
    server, work = first_deploy(up, tmp_path, "--notify", down, "--notify", f"{receiver.url}/hook", "--notify",
                                f"slack:{receiver.url}/slack", env={"HOTPLATE_NOTIFY_SECRET": SECRET})
    work.commit("broken", {"hello.c": "not C\n"})
    assert "deploy FAILED" in work.push()
    hooks = lambda: [e for path, e in receiver.events if path == "/hook"]
    server.wait(lambda: len(hooks()) == 4, timeout=10, what="four signed events, the receiver that is down aside")
    assert {"release", "reason", "trigger"} <= set(hooks()[0]), "every event has every field"
    events = [(e["event"], e["deploy"]) for e in hooks()]
    assert events == [("deploy.started", 1), ("deploy.succeeded", 1), ("deploy.started", 2), ("deploy.failed", 2)]
    assert hooks()[3]["reason"] == "BuildFailed" and "deploy FAILED (BuildFailed)" in hooks()[3]["summary"]
    slack = lambda: [e for path, e in receiver.events if path == "/slack"]
    server.wait(lambda: len(slack()) == 4, what="four Slack messages")
    assert slack()[1]["text"].startswith("hotplate: deploy 1: deploy succeeded")

    log = json.loads(server.cli("notifications", "--json").stdout)
    first = [r for r in log if r["event"] == "deploy.started" and r["deploy"] == 1 and r["target"].endswith("/hook")]
    assert first[0]["attempts"] == 2 and first[0]["error"] is None, "refused once, delivered on the retry"
    assert "deploy.failed" in server.cli("notifications").stdout


def test_a_notification_target_must_be_a_url(up, tmp_path):
    with pytest.raises(RuntimeError, match="--notify 'ftp://x': write an http"):
        up("--notify", "ftp://x")


def test_commit_statuses_on_github_and_gitlab(up, tmp_path, receiver):
    server, work = first_deploy(up, tmp_path, "--notify", f"github:{receiver.url}/repos/o/r", "--notify",
                                f"gitlab:{receiver.url}/projects/7", env={"HOTPLATE_STATUS_TOKEN": TOKEN})
    sha = server.status()["live"]["commit"]
    github = lambda: [e for path, e in receiver.events if path == f"/repos/o/r/statuses/{sha}"]
    gitlab = lambda: [path for path, _ in receiver.events if path.startswith(f"/projects/7/statuses/{sha}?")]
    server.wait(lambda: len(github()) == 2 and len(gitlab()) == 2, what="two statuses on each forge")
    assert [e["state"] for e in github()] == ["pending", "success"] and github()[1]["context"] == "hotplate"
    assert "state=running" in gitlab()[0] and "state=success" in gitlab()[1] and "name=hotplate" in gitlab()[1]
