"""A push's progress, streamed to the pusher (the push hook, ``POST
/api/follow``) and to ``hotplate logs -f``: the deploy that puts a commit
live, line by line, and the one line that says why when none does
(controller/ready.py)."""
from __future__ import annotations

import time

from .pushhook import END  # (the line that ends a push's stream, said where the hook reads it)

#: A push's deploy begins as its ref moves, before its hook asks to follow
#: it; one of that commit that ended this many seconds ago or less is that
#: push's, told whole to the hook that asks late (a slow start on a busy host).
JUST_ENDED_S = 10.0


def follow(c, sha: str, pusher: str | None = None, timeout: float = 600):
    """Yield the progress lines of the deploy that puts ``sha`` (or a newer
    push that supersedes it) live; its record names ``pusher``."""
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    first_pass = c.started
    c.ask(sha, pusher)
    c.wake("push")
    while True:
        d = wait_for_deploy(c, sha, seen, deadline, first_pass)
        if d is None:
            yield outcome_of(c, sha)
            return
        seen.add(d.id)
        if d.commit != sha:
            yield f"a newer push ({d.commit[:12]}) supersedes this one; following its deploy"
        try:
            yield from stream(c, d, deadline)
        finally:  # (its lines first: the pusher does not wait on a write to the history)
            if d.commit == sha and pusher:
                c.history.attribute(d.id, pusher)  # (begun as the ref moved, before the hook said who pushed)
        if not d.done:
            yield (f"still deploying after {timeout:.0f}s; the push returns now: follow it with "
                   f"`hotplate logs {d.id}` and `hotplate status`")
            return
        if d.commit == sha or d.commit == c.observed:
            return


def outcome_of(c, sha: str) -> str:
    """The last line of a push that no deploy of its own answers: why its
    commit is not deployed, or which later commit took its place and how
    that one stands (never just what is live)."""
    tip = c.observed
    if tip is None or tip == sha:
        return c.ready(sha).message
    if covers(c, sha, tip):
        return f"a newer push ({tip[:12]}) supersedes this one: {c.ready(tip).message}"
    return (f"this commit is no longer on the branch (a force push put {tip[:12]} there): "
            f"{c.ready(tip).message}")


def covers(c, sha: str, other: str | None) -> bool:
    """Whether deploying ``other`` deploys ``sha`` too (same or newer commit)."""
    return other is not None and (other == sha or c.source.is_ancestor(sha, other))


def wait_for_deploy(c, sha: str, seen: set[int], deadline: float, first_pass: int):
    """The next deploy covering ``sha``, or None once the loop has settled
    without deploying it (already live, failed before, pinned), or once a
    whole pass begun after the push ended in an error outside any deploy."""
    while time.monotonic() < deadline:
        with c.cond:
            d, recent, observed, woken = c.active, c.recent, c.observed, c.wakeup.is_set()
        if d is not None and d.id not in seen and covers(c, sha, d.commit):
            return d
        if d is None and recent is not None and recent.id not in seen and recent.commit == sha and \
                recent.trigger == "push" and time.monotonic() - recent.ended < JUST_ENDED_S:
            return recent  # (begun as the ref moved, controller/refwatch.py, and over before its hook asked)
        if d is None and c.last_error and c.ended > first_pass:
            return None
        # (git and the history are read outside the lock, which every deploy line takes: a
        # deploy may have begun since, and Progressing is not settled, so the next look finds it)
        if d is None and not woken and observed is not None and settled(c.ready(observed)) and \
                (covers(c, sha, observed) or c.ended > first_pass):
            return None  # (a pass since the push saw the branch elsewhere: a force push replaced it)
        with c.cond:
            c.cond.wait(0.2)
    return None


def settled(r) -> bool:
    """Whether the loop neither deploys nor will deploy for answer ``r``."""
    return not r.deploy and r.state != "Progressing"


def stream(c, d, deadline: float):
    """The lines of deploy ``d`` as they come, until it ends or ``deadline``."""
    i = 0
    while time.monotonic() < deadline:
        with c.cond:
            while i >= len(d.lines) and not d.done and time.monotonic() < deadline:
                c.cond.wait(0.5)
            lines, i = d.lines[i:], len(d.lines)
            done = d.done
        yield from lines
        if done and i >= len(d.lines):
            return
