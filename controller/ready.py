"""Whether live is what the branch asks for, and if not, why and what next:
the one derivation (Flux's Ready condition) that the reconcile loop (deploy
now or not), ``status`` (its ``state``), ``wait`` and the push's final line
(when no deploy ran) all read.

:func:`derive` is pure: the controller gathers :class:`Facts` once
(controller/reconcile.py ``Controller.ready``) and every reader gets the
same answer from the same facts.
"""
from __future__ import annotations

from dataclasses import dataclass

#: The states, as ``status`` shows them.
STATES = ("Synced", "Pinned", "Progressing", "Failed", "Retrying", "OutOfSync")


@dataclass(frozen=True)
class Facts:
    """What the derivation needs, read at one moment.

    :param tip: the branch tip (a follower: the commit the fleet names); None: no branch.
    :param live_release: what ``current`` serves; ``live_commit`` the commit that built it.
    :param live_matches: the tip is live (a builder: its commit; a follower: the release the fleet names).
    :param config_synced: live's config set is the one deploying the tip would give.
    :param config_failed: deploying that config set on this tip failed (until it changes again).
    :param failure: the last failed deploy of the tip (``id``, ``reason``), if any.
    :param forced: an operator asked for the tip (``retry``, ``sync``, ``config set``).
    :param retry_in: seconds until the tip may be tried again after an error (inf: given up).
    :param last_error: the loop's own last error, outside any deploy.
    :param unreadable: why the history could not be read (then ``failure``
        is unknown: ``status`` says so).
    """

    tip: str | None
    live_release: str | None = None
    live_commit: str | None = None
    live_matches: bool = False
    config_synced: bool = True
    config_failed: bool = False
    pinned: str | None = None
    active: bool = False
    failure: dict | None = None
    forced: bool = False
    retry_in: float = 0.0
    last_error: str | None = None
    unreadable: str | None = None


@dataclass(frozen=True)
class Ready:
    """One answer: ``state`` (:data:`STATES`), a typed ``reason``, the line a
    pusher reads, and whether the loop deploys the tip now."""

    state: str
    reason: str | None
    message: str
    deploy: bool = False


def derive(f: Facts) -> Ready:
    if f.pinned:
        return Ready("Pinned", "Pinned", f"not deployed: live is pinned to {f.pinned} by a rollback; "
                                         "run `hotplate resume`")
    if f.active:
        return Ready("Progressing", None, "a deploy is in progress")
    if f.tip is None:
        return Ready("OutOfSync", "BranchMissing", f"the tracked branch does not exist; live stays on {f.live_release}")
    if f.live_matches:
        if f.config_synced:
            return Ready("Synced", None, f"already live: release {f.live_release}")
        if f.config_failed and not f.forced:
            return Ready("Failed", "ConfigFailed", "not deployed: the deploy of the new config set failed (see "
                                                   "`hotplate history`); change it again, or `hotplate retry`")
        return Ready("OutOfSync", "ConfigChanged", "the config set changed: deploying it", deploy=True)
    if f.forced:
        return Ready("OutOfSync", "Requested", "deploying on request", deploy=True)
    if f.failure is not None:
        return Ready("Failed", f.failure["reason"], f"not deployed: this commit failed before (deploy "
                                                    f"{f.failure['id']}: {f.failure['reason']}); push a fix, or "
                                                    "`hotplate retry`")
    if f.retry_in == float("inf"):
        return Ready("Failed", "GaveUp", "not deployed: its deploys failed for outside reasons too many times in a "
                                         "row; fix the cause (see `hotplate history`), then `hotplate retry`")
    if f.retry_in > 0:
        return Ready("Retrying", "Retrying", f"not deployed yet: retrying in {f.retry_in:.0f}s after an error; live "
                                             f"is {f.live_release}")
    if f.last_error:
        return Ready("OutOfSync", "ControllerError", f"not deployed: the controller failed before deploying it "
                                                     f"({f.last_error}); live stays on {f.live_release}; it tries "
                                                     "again on the next push, poll or `hotplate sync`", deploy=True)
    return Ready("OutOfSync", None, f"live is {f.live_commit and f.live_commit[:12]} (release {f.live_release})",
                 deploy=True)
