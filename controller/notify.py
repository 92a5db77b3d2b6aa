"""Outgoing notifications: a deploy started, succeeded, failed, rolled back
or errored (issue 12).

Each target (``hotplate up --notify URL``, repeatable) gets a JSON POST:
- a plain URL: the event, signed like hotplate's own webhooks
  (``X-Hotplate-Signature: sha256=<HMAC-SHA256 of the body>`` with the
  notify secret), with ``X-Hotplate-Event`` and ``X-Hotplate-Delivery``;
- ``slack:URL``: a Slack-compatible ``{"text": ...}`` (incoming webhooks
  carry their secret in the URL).
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


@dataclass(frozen=True)
class Target:
    kind: str  # "generic" or "slack"
    url: str

    @classmethod
    def parse(cls, spec: str) -> "Target":
        kind, url = ("slack", spec[len("slack:"):]) if spec.startswith("slack:") else ("generic", spec)
        if not url.startswith(("http://", "https://")):
            raise HotplateError(f"--notify {spec!r}: write an http(s) URL, or slack:URL for a Slack-compatible hook")
        return cls(kind, url)

    def request(self, event: dict, secret: str | None, delivery: str) -> urllib.request.Request:
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


class Notifier:
    """Sends each event to every target, in order, retrying with backoff."""

    def __init__(self, targets: list[Target], secret: str | None, history: History):
        self.targets = targets
        self.secret = secret
        self.history = history
        self.stopping = threading.Event()  # set by stop(): no more attempts or waits
        self.queue: queue.Queue[dict] = queue.Queue()
        if targets:
            threading.Thread(target=self.run, name="notify", daemon=True).start()

    def send(self, event: str, deploy: int, commit: str | None, summary: str, **facts) -> None:
        """Queue ``deploy.<event>`` for every target (returns at once)."""
        if self.targets:
            self.queue.put({"event": f"deploy.{event}", "deploy": deploy, "commit": commit, "summary": summary,
                            "at": time.time(), **facts})

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                event = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            for target in self.targets:
                self.deliver(target, event)

    def deliver(self, target: Target, event: dict) -> None:
        delivery = str(uuid.uuid4())
        error = None
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with urllib.request.urlopen(target.request(event, self.secret, delivery), timeout=TIMEOUT_S) as r:
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
