"""Webhook verification: who sent it, is it signed, is it a push to our branch.

Pure functions over headers and the raw body. Every provider's secret check
is constant-time; there is no unauthenticated mode.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import OrderedDict
from dataclasses import dataclass

MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Event:
    """A verified webhook: its provider, kind (push, ping...), and the pushed branch."""

    provider: str
    kind: str
    branch: str | None
    after: str | None
    delivery: str | None


class WebhookError(Exception):
    """Why a webhook was refused, with the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Deliveries:
    """Delivery ids seen lately, so that a replayed webhook is ignored."""

    def __init__(self, size: int = 4096):
        self.size = size
        self.seen: OrderedDict[str, None] = OrderedDict()

    def replayed(self, delivery: str | None) -> bool:
        """Whether ``delivery`` was seen before; remembers it if not."""
        if not delivery:
            return False
        if delivery in self.seen:
            return True
        self.seen[delivery] = None
        if len(self.seen) > self.size:
            self.seen.popitem(last=False)
        return False


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 signature GitHub (and the generic form) send."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


#: The documented signature formats: GitHub and generic `sha256=<hex>`, Gitea bare hex.
_SIGNED = re.compile(r"^sha256=[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


def _hmac_ok(secret: str, body: bytes, given: str, form: re.Pattern) -> bool:
    """Constant-time check of a signature in its provider's one format
    (anything else, non-ASCII included, is refused before comparing)."""
    if not form.match(given):
        raise WebhookError(401, "malformed signature: expected " +
                           ("sha256=<64 hex digits>" if form is _SIGNED else "64 hex digits"))
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), given.removeprefix("sha256=").encode())


def verify(headers, body: bytes, secret: str) -> Event:
    """Identify the provider, check the signature, parse the event.

    :param headers: a case-insensitive mapping (werkzeug ``Headers``).
    :raises WebhookError: 401 unsigned/badly signed, 413 too big, 400 malformed.
    """
    if len(body) > MAX_BODY:
        raise WebhookError(413, f"body over {MAX_BODY} bytes")
    if "X-Hub-Signature-256" in headers:
        provider, ok, kind = "github", _hmac_ok(secret, body, headers["X-Hub-Signature-256"], _SIGNED), \
            headers.get("X-GitHub-Event", "")
        delivery = headers.get("X-GitHub-Delivery")
    elif "X-Gitea-Signature" in headers:
        provider, ok, kind = "gitea", _hmac_ok(secret, body, headers["X-Gitea-Signature"], _HEX), \
            headers.get("X-Gitea-Event", "")
        delivery = headers.get("X-Gitea-Delivery")
    elif "X-Gitlab-Token" in headers:
        provider = "gitlab"
        ok = hmac.compare_digest(secret.encode(), headers["X-Gitlab-Token"].encode("utf-8", "replace"))
        kind = {"Push Hook": "push"}.get(headers.get("X-Gitlab-Event", ""), headers.get("X-Gitlab-Event", ""))
        delivery = headers.get("X-Gitlab-Event-UUID")
    elif "X-Hotplate-Signature" in headers:
        provider, ok, kind = "generic", _hmac_ok(secret, body, headers["X-Hotplate-Signature"], _SIGNED), \
            headers.get("X-Hotplate-Event", "push")
        delivery = headers.get("X-Hotplate-Delivery")
    else:
        raise WebhookError(401, "unsigned: send X-Hub-Signature-256, X-Gitea-Signature, X-Gitlab-Token or X-Hotplate-Signature")
    if not ok:
        raise WebhookError(401, f"bad {provider} signature: check the webhook secret")
    if kind == "ping":
        return Event(provider, "ping", None, None, delivery)
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        raise WebhookError(400, "body is not JSON") from None
    ref = payload.get("ref") if isinstance(payload, dict) else None
    branch = ref.removeprefix("refs/heads/") if isinstance(ref, str) and ref.startswith("refs/heads/") else None
    after = payload.get("after") if isinstance(payload, dict) else None
    return Event(provider, kind or "push", branch, after, delivery)
