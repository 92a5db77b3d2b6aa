"""What an operator asks of the controller (the API's POSTs, the CLI's
commands): roll back, restart, resume, retry, change the config, revert,
promote to another environment. Each
returns what it did, or raises :class:`StalledError` saying what to do
instead; the deploys they start run through the controller's one loop."""
from __future__ import annotations

import time

from .appconfig import ConfigStore
from .deploy import RESTART, ROLLBACK, Attempt, leading
from .errors import StalledError
from .registry import TAG, Registry
from .registry import promote as promote_tag
from .retention import commit_of, previous_release
from .status import releases


def rollback(c, to: str | None = None, actor: str | None = None):
    """Re-point live to a retained release with no build, and pin it.

    Waits for a deploy in progress first, then goes exactly one release
    back from what is live then, or to ``to``.
    """
    with c.rollout_lock:
        target = to or previous_release(c.state, c.history)
        if c.state.release(target) is None:
            raise StalledError(f"no retained release {target or '(previous)'} to roll back to; "
                               "see `hotplate history` for release ids", "NoSuchRelease")
        a = Attempt("rollback", commit=commit_of(c.state, c.history, target), target=target, actor=actor)
        d = c.execute(a, leading(ROLLBACK) if c.leads() else ROLLBACK)
        if d.outcome == "succeeded":
            c.state.pin(target)
            c.emit(d, f"pinned to {target}: auto-sync is suspended until `hotplate resume`")
        return d


def restart(c, actor: str | None = None):
    """Roll fresh workers onto the live release, through its health gate:
    the way out when the workers are Degraded for a cause outside the code
    (a file, a service, the disk), once it is fixed. Nothing else moves: no
    build, no switch, a rollback's pin stays."""
    with c.rollout_lock:
        live = c.state.live_release()
        if live is None:
            raise StalledError("nothing to restart: no release is live; push a commit", "NothingLive")
        return c.execute(Attempt("restart", commit=c.state.live_commit(), target=live, actor=actor), RESTART)


def resume(c, actor: str | None = None) -> bool:
    """Lift a rollback's pin; False if nothing was pinned."""
    if c.state.pinned() is None:
        return False
    c.state.pin(None)
    c.ask(c.source.tip() if c.source else None, actor)
    c.wake("resume")
    return True


def retry(c, actor: str | None = None) -> str:
    """Deploy the branch tip again even though it failed (on a fleet's
    leader: across the fleet, the same stages); returns the commit."""
    tip = c.source.tip() if c.source else None
    if tip is None:
        raise StalledError("nothing to retry: the tracked branch does not exist", "BranchMissing")
    if c.state.pinned():
        raise StalledError(f"live is pinned to {c.state.pinned()} by a rollback; `hotplate resume` first", "Pinned")
    if tip == c.state.live_commit():
        raise StalledError(f"{tip[:12]} is live already; nothing to retry", "AlreadyLive")
    c.force(tip, "retry", actor)
    return tip


def change_config(c, set_: dict[str, str], unset: list[str], secret: bool, actor: str | None = None) -> dict:
    """``hotplate config set/unset``: store the change, then deploy the tip
    again so that new workers get it (a rollback's pin holds it back until
    ``hotplate resume``)."""
    ConfigStore(c.state).change(set_, unset, secret)
    tip = c.source.tip() if c.source else None
    desired = c.desired_config(tip)
    live = c.state.release(c.state.live_release())
    pending = tip is not None and (live and live.config) != desired
    if pending and not c.state.pinned():
        c.force(tip, "config", actor)
    return {"commit": tip, "config": desired, "deploying": pending and not c.state.pinned(),
            "pinned": c.state.pinned()}


def revert(c, sha: str | None = None, force: bool = False, actor: str | None = None) -> str:
    """Commit a revert of ``sha`` (default: the branch tip) and deploy it."""
    target = sha or c.source.tip()
    if target is None:
        raise StalledError("nothing to revert: the branch does not exist", "BranchMissing")
    new_tip = c.source.revert(target, force)
    c.ask(new_tip, actor)
    c.wake("revert")
    return new_tip


def promote(c, release: str | None, source: str, target: str, actor: str | None = None) -> dict:
    """Move environment ``target``'s tag to a release this environment
    (``source``, the tag it publishes) verified: the same manifest, bit for
    bit; the target environment pulls it and runs its own smoke check and
    gate. Refused, with the reason, for a release that did not pass here."""
    url = c.settings.publish
    if not url:
        raise StalledError("this controller publishes nothing, so it has nothing verified to promote: run "
                           "`hotplate promote` against the source environment (hotplate up --publish "
                           "REGISTRY/REPO:ENV)", "NotPublishing")
    own = Registry(url).tag
    if source != own:
        raise StalledError(f"this controller is the {own!r} environment (it publishes {url}), not {source!r}: "
                           f"pass --state of {source!r}'s controller, or --from {own}", "WrongEnvironment")
    if not TAG.fullmatch(target) or target in (own, "live") or target.endswith(".promotion"):
        raise StalledError(f"--to {target!r}: another environment's tag (letters, digits, '.', '_', '-'), "
                           f"not {own!r} or 'live'", "BadEnvironment")
    verified = c.state.verified()
    release = release or (verified.release if verified else None)
    listed = {r["release"]: r for r in releases(c)}
    if release not in listed:
        raise StalledError(f"no retained release {release or '(verified)'} in {own}; see `hotplate releases`",
                           "NoSuchRelease")
    if not listed[release]["passed"]:
        why = next((f" (deploy {d['id']}: {d['outcome']}, {d['reason']})" for d in c.history.list(200)
                    if d["release"] == release and d["outcome"] != "succeeded"), "")
        raise StalledError(f"release {release} did not pass {own}'s health gate{why}: only a release verified in "
                           f"{own} is promoted", "NotVerified")
    spec = c.state.release(release)
    if spec.config:
        raise StalledError(f"release {release} runs with {own}'s config set {spec.config[:12]}: each environment "
                           "keeps its own config and secrets, and promotion does not carry a config set yet; "
                           f"promote a release built without one", "NotPromotable")
    digest = promote_tag(url, release, target, {"by": actor or "?", "from": own, "at": int(time.time())})
    return {"release": release, "from": own, "to": target, "digest": digest,
            "registry": f"{Registry(url).url}:{target}"}
