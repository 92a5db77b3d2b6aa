"""Outgoing notifications: a deploy started, succeeded, failed, rolled back
or errored (issue 12).

Each target (``hotplate up --notify URL``, repeatable) gets a JSON POST:
- a plain URL: the event, signed like hotplate's own webhooks
  (``X-Hotplate-Signature: sha256=<HMAC-SHA256 of the body>`` with the
  notify secret), with ``X-Hotplate-Event`` and ``X-Hotplate-Delivery``;
- ``slack:URL``: a Slack-compatible ``{"text": ...}`` (incoming webhooks
  carry their secret in the URL);
- ``github:API/repos/OWNER/REPO``, ``gitea:API/repos/OWNER/REPO`` or
  ``gitlab:API/projects/ID``: a commit status on the deployed commit
  (pending, then success or failure), with the status token.
Deliveries run on a thread of their own, so a slow receiver never holds up a
deploy; each is tried up to :data:`ATTEMPTS` times with backoff and recorded
in the history's delivery log (``hotplate notifications``).
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass

from .errors import HotplateError
from .record import History
from .webhooks import sign

log = logging.getLogger("hotplate.controller")

ATTEMPTS = 5
BACKOFF_S = (1, 2, 4, 8)  # waits between the attempts
TIMEOUT_S = 5.0


KINDS = ("slack", "github", "gitea", "gitlab")
#: A deploy event's commit status, per forge (GitLab names them its own way).
STATES = {"started": ("pending", "running"), "succeeded": ("success", "success"),
          "failed": ("failure", "failed"), "rolled_back": ("failure", "failed"), "errored": ("error", "failed")}


@dataclass(frozen=True)
class Target:
    kind: str  # "generic", or one of KINDS
    url: str

    @classmethod
    def parse(cls, spec: str) -> "Target":
        kind, _, rest = spec.partition(":")
        kind, url = (kind, rest) if kind in KINDS else ("generic", spec)
        if not url.startswith(("http://", "https://")):
            raise HotplateError(f"--notify {spec!r}: write an http(s) URL, or slack:URL, github:URL, gitea:URL, "
                                "gitlab:URL (see docs/how-to/ci.md)")
        return cls(kind, url)

    @property
    def status(self) -> bool:
        """Whether this target takes commit statuses (a forge's API)."""
        return self.kind in ("github", "gitea", "gitlab")

    def request(self, event: dict, secret: str | None, delivery: str, token: str | None = None
                ) -> urllib.request.Request:
        if self.status:
            return self.status_request(event, token)
        if self.kind == "slack":
            body = json.dumps({"text": f"hotplate: {event['summary']}"}).encode()
            headers = {}
        else:
            body = json.dumps(event).encode()
            headers = {"X-Hotplate-Event": event["event"], "X-Hotplate-Delivery": delivery}
            if secret:
                headers["X-Hotplate-Signature"] = sign(secret, body)
        return urllib.request.Request(self.url, data=body, method="POST",
                                      headers={"Content-Type": "application/json", **headers})

    def status_request(self, event: dict, token: str | None) -> urllib.request.Request:
        state, gitlab_state = STATES[event["event"].removeprefix("deploy.")]
        description = event["summary"][:140]
        url = f"{self.url.rstrip('/')}/statuses/{event['commit']}"
        if self.kind == "gitlab":
            query = urllib.parse.urlencode({"state": gitlab_state, "name": "hotplate", "description": description})
            return urllib.request.Request(f"{url}?{query}", data=b"", method="POST",
                                          headers={"PRIVATE-TOKEN": token or ""})
        auth = f"Bearer {token}" if self.kind == "github" else f"token {token}"
        body = json.dumps({"state": state, "description": description, "context": "hotplate"}).encode()
        return urllib.request.Request(url, data=body, method="POST",
                                      headers={"Content-Type": "application/json", "Authorization": auth})


class Notifier:
    """Sends each event to every target, in order, retrying with backoff:
    a queue and a thread per target, so that one that is down delays only
    its own events."""

    def __init__(self, targets: list[Target], secret: str | None, history: History, token: str | None = None):
        self.targets = targets
        self.secret = secret
        self.token = token  # for commit statuses
        self.history = history
        self.stopping = threading.Event()  # set by stop(): no more attempts or waits
        self.queues: list[queue.Queue[dict]] = [queue.Queue() for _ in targets]
        for target, events in zip(targets, self.queues):
            threading.Thread(target=self.run, args=(target, events), name="notify", daemon=True).start()

    def send(self, event: str, deploy: int, commit: str | None, summary: str, **facts) -> None:
        """Queue ``deploy.<event>`` for every target (returns at once)."""
        event = {"event": f"deploy.{event}", "deploy": deploy, "commit": commit, "summary": summary,
                 "at": time.time(), "release": None, "reason": None, **facts}  # (every event has every field)
        for events in self.queues:
            events.put(event)

    def stop(self) -> None:
        self.stopping.set()

    def run(self, target: Target, events: "queue.Queue[dict]") -> None:
        while not self.stopping.is_set():
            try:
                event = events.get(timeout=0.5)
            except queue.Empty:
                continue
            if event["commit"] or not target.status:  # a working tree has no commit to mark
                self.deliver(target, event)

    def deliver(self, target: Target, event: dict) -> None:
        delivery = str(uuid.uuid4())
        error = None
        for attempt in range(1, ATTEMPTS + 1):
            try:
                request = target.request(event, self.secret, delivery, self.token)
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as r:
                    error = None if 200 <= r.status < 300 else f"HTTP {r.status}"
            except urllib.error.HTTPError as e:
                error = f"HTTP {e.code}"
            except OSError as e:
                error = f"{type(e).__name__}: {e}"
            if error is None or attempt == ATTEMPTS or self.stopping.wait(BACKOFF_S[attempt - 1]):
                break
        if error:
            log.warning("notification %s to %s failed after %d attempts: %s", event["event"], target.url, attempt,
                        error)
        try:
            self.history.record_delivery(delivery, event["deploy"], event["event"], target.url, attempt, error)
        except Exception:
            log.exception("could not record the delivery of %s to %s", event["event"], target.url)
