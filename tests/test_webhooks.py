"""Webhook signature checks as pure functions, including GitHub's documented example."""
import pytest
from werkzeug.datastructures import Headers

from hotplate.controller.webhooks import WebhookError, sign, verify


def test_github_documented_example():
    assert sign("It's a Secret to Everybody", b"Hello, World!") == \
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_push_event_is_parsed_after_the_signature():
    body = b'{"ref": "refs/heads/main", "after": "abc"}'
    event = verify(Headers({"X-Hub-Signature-256": sign("k", body), "X-GitHub-Event": "push",
                            "X-GitHub-Delivery": "d1"}), body, "k")
    assert (event.provider, event.kind, event.branch, event.after, event.delivery) == ("github", "push", "main", "abc", "d1")


@pytest.mark.parametrize("headers,status", [
    ({}, 401),
    ({"X-Hub-Signature-256": "sha256=00"}, 401),
    ({"X-Gitea-Signature": "00"}, 401),
    ({"X-Gitlab-Token": "K"}, 401),
    ({"X-Hotplate-Signature": sign("other", b"{}")}, 401),
])
def test_unsigned_or_badly_signed_requests_are_refused(headers, status):
    with pytest.raises(WebhookError) as e:
        verify(Headers(headers), b"{}", "k")
    assert e.value.status == status


def test_oversize_body_is_refused_before_anything_else():
    with pytest.raises(WebhookError) as e:
        verify(Headers({}), b"x" * (1024 * 1024 + 1), "k")
    assert e.value.status == 413


@pytest.mark.parametrize("headers", [
    {"X-Hub-Signature-256": "sha256=" + "é" * 64},
    {"X-Hub-Signature-256": "sha1=" + "0" * 40},
    {"X-Hub-Signature-256": sign("k", b"{}").upper()},
    {"X-Gitea-Signature": "sha256=" + "0" * 64},
    {"X-Hotplate-Signature": "ÿ"},
    {"X-Gitlab-Token": "ké"},
])
def test_malformed_or_non_ascii_signatures_are_401_never_500(headers):
    with pytest.raises(WebhookError) as e:
        verify(Headers(headers), b"{}", "k")
    assert e.value.status == 401


def test_a_replayed_delivery_is_ignored():
    from hotplate.controller.webhooks import Deliveries

    seen = Deliveries(size=2)
    assert [seen.replayed(d) for d in ("a", "b", "a", None, None)] == [False, False, True, False, False]
    seen.replayed("c")  # the oldest id ("a") is forgotten past the size
    assert seen.replayed("a") is False
