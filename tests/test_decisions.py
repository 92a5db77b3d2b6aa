"""The controller's decisions, reachable without a process: whether a tip
is live and if not why and whether to deploy it (controller/ready.py), how
a deploy's error becomes its outcome, and when a commit is tried again
(controller/outcome.py). The loop, status, wait and the push's final line
all read the first, so they cannot disagree."""
from __future__ import annotations

import errno
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest

from hotplate.controller import outcome, push
from hotplate.controller.errors import BuildError, HotplateError, RetryableError, RolloutError
from hotplate.controller.outcome import Backoff, classify
from hotplate.controller.ready import STATES, Facts, derive

TIP, OLD = "b" * 40, "a" * 40
BASE = Facts(TIP, live_release="r1", live_commit=OLD)
FAILED = {"id": 7, "reason": "BuildFailed", "detail": "x.c:3: error"}


@pytest.mark.parametrize("facts, state, reason, deploy", [
    (BASE, "OutOfSync", None, True),
    (replace(BASE, live_commit=TIP, live_matches=True), "Synced", None, False),
    (replace(BASE, pinned="r0"), "Pinned", "Pinned", False),
    (replace(BASE, pinned="r0", live_matches=True, live_commit=TIP), "Pinned", "Pinned", False),
    (replace(BASE, active=True), "Progressing", None, False),
    (replace(BASE, tip=None), "OutOfSync", "BranchMissing", False),
    (replace(BASE, failure=FAILED), "Failed", "BuildFailed", False),
    (replace(BASE, failure=FAILED, forced=True), "OutOfSync", "Requested", True),
    (replace(BASE, retry_in=3.0), "Retrying", "Retrying", False),
    (replace(BASE, retry_in=float("inf")), "Failed", "GaveUp", False),
    (replace(BASE, last_error="git fetch failed"), "OutOfSync", "ControllerError", True),
    # live, but the config set changed: deploy it, unless that very set failed
    (replace(BASE, live_matches=True, live_commit=TIP, config_synced=False), "OutOfSync", "ConfigChanged", True),
    (replace(BASE, live_matches=True, live_commit=TIP, config_synced=False, config_failed=True),
     "Failed", "ConfigFailed", False),
    (replace(BASE, live_matches=True, live_commit=TIP, config_synced=False, config_failed=True, forced=True),
     "OutOfSync", "ConfigChanged", True),
    # a commit that once failed and is live now (retried) is Synced, not Failed
    (replace(BASE, live_matches=True, live_commit=TIP, failure=FAILED), "Synced", None, False),
])
def test_one_derivation_answers_the_loop_status_and_the_pusher(facts, state, reason, deploy):
    ready = derive(facts)
    assert (ready.state, ready.reason, ready.deploy) == (state, reason, deploy)
    assert ready.state in STATES and ready.message
    if state == "Failed":
        assert "hotplate retry" in ready.message or "change it again" in ready.message, ready.message
    if state == "Pinned":
        assert "hotplate resume" in ready.message


def test_the_pushers_line_names_the_failed_deploy_and_what_to_do():
    assert derive(replace(BASE, failure=FAILED)).message == (
        "not deployed: this commit failed before (deploy 7: BuildFailed); push a fix, or `hotplate retry`")
    assert "retrying in 3s" in derive(replace(BASE, retry_in=3.0)).message


class _DeployBegins:
    """A controller whose deploy of the pushed tip begins between a push's
    look at ``active`` and its reading of the Ready answer: the window left
    open by reading git and the history outside the lock."""

    def __init__(self):
        self.cond, self.wakeup = threading.Condition(), threading.Event()
        self.observed, self.last_error, self.ended = TIP, None, 1
        self.active, self.recent, self.looks = None, None, 0  # (no deploy has ended)
        self.deploy = SimpleNamespace(id=3, commit=TIP)
        self.source = SimpleNamespace(is_ancestor=lambda a, b: a == b)

    def ready(self, tip):
        self.looks += 1
        self.active = self.deploy  # began just now
        return derive(replace(BASE, tip=tip, active=True))


def test_a_push_never_takes_a_deploy_that_just_began_for_a_settled_answer():
    c = _DeployBegins()
    d = push.wait_for_deploy(c, TIP, set(), time.monotonic() + 5, first_pass=0)
    assert d is c.deploy and c.looks == 1  # not None, which would end the push on "a deploy is in progress"


class _Settled:
    """A controller at rest on ``TIP``, whose last deploy ended ``ago`` seconds ago."""

    def __init__(self, commit: str, trigger: str, ago: float):
        self.cond, self.wakeup = threading.Condition(), threading.Event()
        self.observed, self.last_error, self.ended, self.active = TIP, None, 1, None
        self.recent = SimpleNamespace(id=7, commit=commit, trigger=trigger, ended=time.monotonic() - ago)
        self.source = SimpleNamespace(is_ancestor=lambda a, b: a == b)

    def ready(self, tip):
        return derive(replace(BASE, tip=tip, live_commit=tip, live_matches=True))


@pytest.mark.parametrize("commit, trigger, ago, told", [
    (TIP, "push", 1.0, True),  # begun as the ref moved, over before the hook asked: that push's
    (TIP, "push", push.JUST_ENDED_S + 1, False),  # long over: not this push's
    (OLD, "push", 1.0, False),  # another commit's
    (TIP, "rollback", 1.0, False),  # no push began it
])
def test_a_late_hook_is_told_its_pushs_deploy_and_no_other(commit, trigger, ago, told):
    c = _Settled(commit, trigger, ago)
    d = push.wait_for_deploy(c, TIP, set(), time.monotonic() + 5, first_pass=0)
    assert (d is c.recent) if told else d is None


@pytest.mark.parametrize("error, expected", [
    (None, ("succeeded", None)),
    (RolloutError("gate", "HealthGateFailed"), ("rolled_back", "HealthGateFailed")),
    (RetryableError("etcd", "EtcdUnreachable"), ("errored", "EtcdUnreachable")),
    (OSError(errno.ENOSPC, "No space left on device"), ("errored", "DiskFull")),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), ("errored", "DiskFull")),
    (BuildError("x.c:1: error", []), ("failed", "BuildFailed")),
    (HotplateError("bad", "Whatever"), ("failed", "Whatever")),
    (KeyError("oops"), ("failed", "InternalError")),
])
def test_a_deploys_error_becomes_its_outcome(error, expected):
    if error is not None:
        try:
            raise error  # (as a stage raises it: with its trace)
        except Exception as e:
            error = e
    got, reason, detail = classify(error)
    assert (got, reason) == expected
    if expected[1] == "InternalError":
        assert "Traceback" in detail and "raise error" in detail, "an unplanned error keeps its trace"


def test_outside_failures_back_off_doubling_then_give_up(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(outcome.time, "monotonic", lambda: now[0])
    b = Backoff()
    assert b.wait(TIP) == 0
    waits = []
    for _ in range(Backoff.LIMIT - 1):
        b.record(TIP, "errored")
        waits.append(b.wait(TIP))
    assert waits == [1, 2, 4, 8, 16]
    now[0] += 16
    assert b.wait(TIP) == 0, "due again once its wait has passed"
    b.record(TIP, "errored")
    assert b.gave_up(TIP) and b.wait(TIP) == float("inf")
    b.forget(TIP)  # hotplate retry
    assert b.wait(TIP) == 0 and not b.gave_up(TIP)
    b.record(TIP, "errored")
    b.record(TIP, "failed")  # a failure of the commit itself is no outside error: history says Failed
    assert b.wait(TIP) == 0
    b.record(None, "errored")  # a deploy without a commit (dev, rollback) is not retried
    assert b.errors.keys() == set()
