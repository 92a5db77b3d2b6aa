"""How a deploy ended, and what that means for trying its commit again:
the outcome, typed reason and detail from its error (:func:`classify`), the
pusher's last line (:func:`final_line`), and the retries of commits that
failed for a reason outside them (:class:`Backoff`)."""
from __future__ import annotations

import time
import traceback

from .errors import DISK_FULL, HotplateError, RetryableError, RolloutError


def classify(error: Exception | None) -> tuple[str, str | None, str]:
    """A deploy's outcome, reason and detail from how its stages ended."""
    if error is None:
        return "succeeded", None, ""
    if isinstance(error, RolloutError):
        return "rolled_back", error.reason, f"rollout failed: {error}"
    if isinstance(error, RetryableError):
        return "errored", error.reason, str(error)
    if isinstance(error, OSError) and error.errno in DISK_FULL:  # in any stage
        return "errored", "DiskFull", f"the disk is full: {error}; free space under the state directory"
    if isinstance(error, HotplateError):
        return "failed", error.reason, str(error)
    trace = "".join(traceback.format_exception(error)).rstrip()
    return "failed", "InternalError", f"internal error: {type(error).__name__}: {error}\n{trace}"


class Backoff:
    """Retries of commits whose deploy failed for a reason outside them:
    1, 2, 4 ... 60 s apart, at most :attr:`LIMIT` in a row."""

    LIMIT = 6

    def __init__(self):
        self.errors: dict[str, tuple[int, float]] = {}  # commit -> (errors in a row, monotonic time of the last)

    def record(self, commit: str | None, outcome: str) -> None:
        if commit is None:
            return
        if outcome == "errored":
            n = self.errors.get(commit, (0, 0.0))[0] + 1
            self.errors[commit] = (n, time.monotonic())
        else:
            self.errors.pop(commit, None)

    def forget(self, commit: str) -> None:
        self.errors.pop(commit, None)

    def gave_up(self, commit: str | None) -> bool:
        return commit in self.errors and self.errors[commit][0] >= self.LIMIT

    def wait(self, commit: str | None) -> float:
        """Seconds until ``commit`` may be tried again (0: now); inf once given up."""
        if commit not in self.errors:
            return 0.0
        if self.gave_up(commit):
            return float("inf")
        n, last = self.errors[commit]
        return max(0.0, last + min(2 ** (n - 1), 60) - time.monotonic())


def final_line(a, outcome: str, reason: str | None, live: str | None, backoff: Backoff) -> str:
    """What the pusher reads last, once deploy ``a`` ended with ``outcome``."""
    if outcome == "succeeded":
        to_live = sum(v for k, v in a.stages.items() if k != "gate")
        return (f"deploy succeeded: release {a.target} went live {to_live * 1000:.0f} ms after the deploy "
                f"started and passed its health gate")
    live = live or "nothing"
    if a.trigger == "restart":
        return (f"restart FAILED ({reason}): the fresh workers do not pass the gate either; {live} is live, "
                "Degraded: fix the cause, then `hotplate restart` again")
    if outcome == "errored":
        retry = backoff.wait(a.commit)
        then = (f"retrying in {retry:.0f}s" if retry > 0 and not backoff.gave_up(a.commit) else
                "gave up retrying; run `hotplate retry` once the cause is fixed")
        return f"deploy FAILED ({reason}, not the commit's fault): {then}; live stays on {live}"
    return f"deploy {outcome.replace('_', ' ').upper()} ({reason}); live stays on {live}"
