"""The reconcile loop: compare desired (branch tip) with live, act, repeat.

Level-triggered, like a Kubernetes controller: triggers (push hook, webhook,
poll, ``hotplate sync``) only wake the loop; each pass reads the branch tip
again, so a burst of pushes coalesces into the deploy in progress plus one
deploy of the newest commit. One rollout at a time.

A deploy runs the stage list of :mod:`controller.deploy`; whatever happens,
:meth:`Controller.conclude` ends it: anything failing before the switch
leaves live untouched, anything failing after it switches back and rolls the
previous release in again, and the outcome is recorded with a final line.
"""
from __future__ import annotations

import logging
import random
import shutil
import sqlite3
import threading
import time
import traceback
from dataclasses import dataclass, field

from prometheus_client import Histogram

from hotplate.server.contract.fleet import Failure

from .appconfig import COMMITTED, ConfigStore, digest
from .build import prune_cache
from .registry import push
from .deploy import COMMIT, FOLLOW, ROLLBACK, Attempt, Pipeline, format_module, leading
from .errors import DISK_FULL, HotplateError, RetryableError, RolloutError, StalledError
from .notify import Notifier
from .record import History
from .rollout import GateSettings, ServerProcess, roll
from .source import Source
from .state import State
from .verify import Policy

log = logging.getLogger("hotplate.controller")
#: Seconds between tries to publish a live release the registry refused (--publish).
PUBLISH_RETRY_S = 2.0
#: Buckets of hotplate_deploy_stage_seconds: a stage takes milliseconds (switch) to minutes (a big build).
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass(frozen=True)
class Settings:
    """How the controller behaves (``hotplate up`` flags)."""

    branch: str = "main"
    poll_interval: float = 30.0
    keep_releases: int = 10
    cache_bytes: int = 1024 ** 3
    gate: GateSettings = GateSettings()
    verify: Policy | None = None
    sanitize: bool = False
    #: a registry repository to publish each release that goes live to, for followers
    publish: str | None = None


@dataclass
class Deploy:
    """A deploy in progress, held in memory so its lines can be streamed."""

    id: int
    commit: str | None
    trigger: str
    lines: list[str] = field(default_factory=list)
    done: bool = False
    outcome: str = "progressing"


class Controller:
    """Owns the state directory: the only writer of ``current``, releases and history."""

    def __init__(self, state: State, source: Source | None, server: ServerProcess, settings: Settings,
                 history: History, notifier: Notifier | None = None):
        self.state = state
        self.notifier = notifier or Notifier([], None, history)
        # Not in a registry: /metrics collects it (controller/api.py).
        self.stage_seconds = Histogram("hotplate_deploy_stage_seconds", "Time in each stage of a deploy", ["stage"],
                                       registry=None, buckets=STAGE_BUCKETS)
        self.source = source
        self.server = server
        self.settings = settings
        self.history = history
        self.cond = threading.Condition()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.rollout_lock = threading.RLock()  # a rollback holds it across its own deploy
        self.active: Deploy | None = None
        self.trigger = "startup"
        self.observed: str | None = None
        self.last_error: str | None = None
        self.backoff = Backoff()
        # (commit, trigger): a commit to deploy although it failed or is live
        # (`hotplate retry`; `hotplate config set` on the live commit)
        self.forced: tuple[str, str] | None = None
        self.published: str | None = None  # the release last tagged live in the registry (--publish)
        # in a fleet (--fleet): its membership, the waves it rolls out while it leads,
        # and what this host deploys from when it leads and when not
        self.fleet = self.waves = None
        self.build_source, self.follow_source = source, None
        self.last_failure: Failure | None = None  # this host's last deploy that did not succeed, for the fleet
        self.publishing = threading.Lock()
        # (commit, config set) whose deploy failed: not tried again by itself
        self.config_failed: tuple[str, str | None] | None = None
        # Passes are numbered as they start; `ended` is the number of the last
        # one that ended, so that a follower knows when one begun after its push is over.
        self.started = self.ended = 0

    # -- the loop ---------------------------------------------------------

    def recover(self) -> None:
        """After a restart: drop half-made releases and checkouts, close
        interrupted deploys, and put ``current`` back on the last release
        that passed its gate if a killed controller left it elsewhere."""
        for staging in self.state.releases.glob(".staging-*"):
            shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(self.state.sources, ignore_errors=True)
        n = self.history.interrupt_unfinished()
        if n:
            log.warning("%d deploy(s) were interrupted by a controller stop", n)
        verified = self.state.verified()
        good, commit = (verified.release, verified.commit) if verified else \
            next(iter(self.history.live_releases(1)), (None, None))
        if good and self.state.release(good) is not None and self.state.live_release() != good \
                and self.state.pinned() is None:
            log.warning("current was %s (not verified); restoring %s", self.state.live_release(), good)
            self.state.switch(good, commit)
            if self.server.pid is not None:
                roll(self.server, good)

    def run(self) -> None:
        """Reconcile until stopped; sleeps between passes unless woken."""
        while not self.stopping.is_set():
            trigger, self.trigger = self.trigger, "poll"
            with self.cond:
                self.started += 1
                this_pass = self.started
            try:
                self.reconcile(trigger)
                self.last_error = None
            except RetryableError as e:
                self.last_error = f"{e.reason}: {e}"
                log.warning("%s (will retry)", e)
            except HotplateError as e:  # said whole by its message: no trace
                self.last_error = f"{e.reason}: {e}"
                log.warning("%s", e)
            except Exception as e:  # the loop must survive anything
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("reconcile failed")
            if self.unpublished():  # the registry was down when it went live
                log.info("%s", self.publish_live())
            with self.cond:
                self.ended = this_pass
                self.cond.notify_all()
            self.wakeup.wait(min(self.interval(), self.backoff.wait(self.observed) or float("inf"),
                                 PUBLISH_RETRY_S if self.unpublished() else float("inf")))
            self.wakeup.clear()

    def interval(self) -> float:
        """The poll interval with up to 20% jitter, so mirrors do not fetch in step."""
        return self.settings.poll_interval * (1 + random.random() * 0.2)

    def wake(self, trigger: str) -> None:
        self.trigger = trigger
        self.wakeup.set()

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()

    def reconcile(self, trigger: str) -> None:
        """One pass: deploy the branch tip unless it is live, pinned, failed
        (stalled until a new commit) or backing off after an error."""
        if self.fleet is not None:
            self.source = self.build_source if self.leads() else self.follow_source
            left = self.waves.unfinished() if self.leads() else None
            if left is not None:
                self.end_rollout(left)
            self.vouch_fleet()
        if self.source is None:
            return
        self.source.fetch()
        tip = self.observed = self.source.tip()
        with self.cond:
            self.cond.notify_all()
        if not self.settled(tip):
            self.deploy_commit(tip, trigger)

    def vouch_fleet(self) -> None:
        """A follower's live release is verified once the fleet's rollout
        that names it for this host is over (Done, or RolledBack to it):
        until then, its master would go back to the one before if this
        controller died (server/gunicorn_app.py's fence)."""
        if self.leads():
            return
        try:
            rollout = self.fleet.rollout()
        except HotplateError:
            return
        live = self.state.live_release()
        want = rollout.desired(self.fleet.host) if rollout else None
        if rollout and rollout.state != "Progressing" and live and want and want.release == live and \
                getattr(self.state.verified(), "release", None) != live:
            self.state.vouch(live, self.state.live_commit())

    def settled(self, tip: str | None) -> bool:
        """Whether there is nothing to do for ``tip`` now: it is live, pinned,
        failed (until a new commit), or backing off after an error."""
        if tip is None or self.state.pinned():
            return True
        if self.forced and tip == self.forced[0]:
            return False
        if not self.source.builds:  # a follower serves the release its leader sealed, config set and all
            if self.state.live_release() == self.source.release():
                return True
        elif tip == self.state.live_commit():
            live = self.state.release(self.state.live_release())
            desired = self.desired_config(tip)
            return (live and live.config) == desired or (tip, desired) == self.config_failed
        return self.history.failure(tip) is not None or self.backoff.wait(tip) > 0

    # -- deploying --------------------------------------------------------

    def deploy_commit(self, sha: str, trigger: str) -> Deploy:
        """Check out a commit and deploy its tree."""
        info = self.source.commit_info(sha)
        if self.forced and self.forced[0] == sha:
            trigger, self.forced = self.forced[1], None
        stages = COMMIT if self.source.builds else FOLLOW
        return self.execute(Attempt(trigger, commit=sha, meta=info), leading(stages) if self.leads() else stages)

    def end_rollout(self, left) -> Deploy:
        """Lead a fleet whose last rollout was left unfinished (its leader
        was lost): put every host back on the release before it, recorded
        as a deploy of that release; the tip is then deployed afresh."""
        back = left.previous
        a = Attempt("fleet", commit=back and back.commit, target=back and back.release,
                    meta={"message": back.message, "author": back.author} if back else {})
        return self.execute(a, ("abandon", *ROLLBACK) if a.target else ("abandon",))

    def execute(self, a: Attempt, stages: tuple[str, ...]) -> Deploy:
        """Run one deploy's stages and end it, whatever happens."""
        with self.rollout_lock:
            a.previous, a.previous_commit = self.state.live_release(), self.state.live_commit()
            d = self.begin(a)
            pipeline = self.pipeline(d)
            error = None
            try:
                pipeline.run(a, stages)
            except Exception as e:
                error = e
            self.conclude(d, a, pipeline, error)
            return d

    def pipeline(self, d: Deploy) -> Pipeline:
        return Pipeline(self.state, lambda line: self.emit(d, line), lambda m: self.emit_module(d, m),
                        self.source, self.server, self.settings.gate, self.settings.verify, self.settings.sanitize,
                        self.waves)

    def conclude(self, d: Deploy, a: Attempt, pipeline: Pipeline, error: Exception | None) -> None:
        """The one place a deploy ends: put live back if it moved and the
        deploy did not pass, record the outcome, write the final line."""
        outcome, reason, detail = classify(error)
        try:
            if error is not None:
                for line in detail.splitlines():
                    self.emit(d, line)
                if a.switched:
                    pipeline.restore(a)
            elif self.publishes():
                self.emit(d, self.publish_live())
        except Exception as e:
            log.exception("deploy %d: restoring %s failed", d.id, a.previous)
            self.emit(d, f"could not roll back to {a.previous}: {type(e).__name__}: {e}; "
                         "the supervisor restarts the app server on it")
        finally:
            pipeline.cleanup(a)
            self.backoff.record(a.commit, outcome)
            self.last_failure = None if outcome == "succeeded" else \
                Failure(a.target or a.meta.get("release"), a.commit, reason, outcome)
            if outcome != "succeeded" and a.commit and a.trigger != "rollback":
                self.config_failed = (a.commit, self.desired_config(a.commit))
            self.emit(d, self.final_line(a, outcome, reason))
            try:
                self.history.finish(d.id, outcome, reason=reason, detail=detail if error else None,
                                    release=a.target, stages=a.stages,
                                    modules=[_module_record(m) for m in (getattr(error, "results", None) or a.modules)],
                                    log="\n".join(d.lines))
            except Exception:
                log.exception("deploy %d: could not record its outcome (%s)", d.id, outcome)
            with self.cond:
                d.done, d.outcome = True, outcome
                self.active = None
                self.cond.notify_all()
            if self.fleet is not None:
                self.fleet.tell()
            for stage, seconds in a.stages.items():
                self.stage_seconds.labels(stage).observe(seconds)
            self.notifier.send(outcome, d.id, a.commit, f"deploy {d.id}: {d.lines[-1]}", trigger=a.trigger,
                               release=a.target if outcome == "succeeded" else self.state.live_release(),
                               reason=reason)
        if outcome == "succeeded":
            if self.fleet is None or self.leads():  # a follower: once the fleet's rollout is over (vouch_fleet)
                self.state.vouch(a.target, a.commit)
            self.prune()

    def publish_live(self) -> str:
        """Tag the live release ``live`` in the registry, where followers
        pull it; the line that says how it went. Never raises: a registry
        that fails costs the fleet this release until it is back (the loop
        tries again every few seconds), never this host's deploy."""
        url = self.settings.publish
        with self.publishing:  # live read and tagged in one go: a later release is never overwritten
            release, commit = self.state.live_release(), self.state.live_commit()
            try:
                info = self.source.commit_info(commit) if commit and self.source else {}
                spec = self.state.release(release)
                sent = push(self.state.release_path(release), url, tags=("live", commit) if commit else ("live",),
                            annotations={"hotplate.commit": commit or "", "hotplate.message": info.get("message", ""),
                                         "hotplate.author": info.get("author", ""),
                                         "hotplate.config": spec and spec.config or ""})
                self.published = release
                return f"published {release} to {url} as live ({sent.moved} new blobs)"
            except Exception as e:
                log.warning("publishing %s to %s failed", release, url, exc_info=not isinstance(e, HotplateError))
                return (f"publishing {release} to {url} FAILED ({e}); followers stay on their release until it is "
                        f"published (tried again every {PUBLISH_RETRY_S:g} s)")

    def publishes(self) -> bool:
        """Whether this host tags what goes live: with --publish, and in a fleet only while it leads."""
        return bool(self.settings.publish) and (self.fleet is None or self.leads())

    def leads(self) -> bool:
        """Whether this host leads a fleet: it builds, publishes and rolls out."""
        return self.fleet is not None and self.fleet.leading.is_set()

    def unpublished(self) -> bool:
        return self.publishes() and self.state.live_release() not in (None, self.published)

    def join_fleet(self, fleet, waves, follow_source) -> None:
        """Lead (build, publish, roll out ``waves``) while ``fleet`` holds the
        leader's key, if this host is a candidate; else follow the rollout."""
        self.fleet, self.waves, self.follow_source = fleet, waves, follow_source

    def final_line(self, a: Attempt, outcome: str, reason: str | None) -> str:
        """What the pusher reads last."""
        if outcome == "succeeded":
            to_live = sum(v for k, v in a.stages.items() if k != "gate")
            return (f"deploy succeeded: release {a.target} went live {to_live * 1000:.0f} ms after the deploy "
                    f"started and passed its health gate")
        live = self.state.live_release() or "nothing"
        if outcome == "errored":
            retry = self.backoff.wait(a.commit)
            then = (f"retrying in {retry:.0f}s" if retry > 0 and not self.backoff.gave_up(a.commit) else
                    "gave up retrying; run `hotplate retry` once the cause is fixed")
            return f"deploy FAILED ({reason}, not the commit's fault): {then}; live stays on {live}"
        return f"deploy {outcome.replace('_', ' ').upper()} ({reason}); live stays on {live}"

    # -- progress and records ----------------------------------------------

    def begin(self, a: Attempt) -> Deploy:
        deploy_id = self.history.start(a.trigger, {**a.meta, "sha": a.commit} if a.commit else a.meta or None,
                                       a.previous)
        d = Deploy(deploy_id, a.commit, a.trigger)
        with self.cond:
            self.active = d
            self.cond.notify_all()
        self.notifier.send("started", d.id, a.commit, f"deploy {d.id} started: {a.commit or 'working tree'} "
                                                        f"({a.trigger})", trigger=a.trigger)
        if a.target:
            short = lambda sha: f"commit {sha[:12]}" if sha else "no commit"
            self.emit(d, f"rolling back from {a.previous or '-'} ({short(a.previous_commit)}) "
                         f"to {a.target} ({short(a.commit)})")
        return d

    def emit(self, d: Deploy, line: str) -> None:
        log.info("deploy %d: %s", d.id, line)
        with self.cond:
            d.lines.append(line)
            self.cond.notify_all()

    def emit_module(self, d: Deploy, m) -> None:
        self.emit(d, "  " + format_module(m))
        for line in m.diagnostics.rstrip().splitlines() if m.diagnostics.strip() else []:
            self.emit(d, "    " + line)

    def prune(self) -> None:
        """Keep the newest N releases, never the live or the previous one,
        and the build cache within its size, never dropping an object that a
        kept release loads."""
        keep = {self.state.live_release(), self.previous_release(), self.state.pinned()}
        releases = sorted((p for p in self.state.releases.iterdir() if not p.name.startswith(".")),
                          key=lambda p: p.stat().st_mtime, reverse=True)
        for path in releases[self.settings.keep_releases:]:
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
        self.state.prune_commits()
        kept = (self.state.release(path.name) for path in self.state.releases.iterdir())
        kept_objects = {m.key for spec in kept if spec for m in spec.modules}
        prune_cache(self.state.cache, kept_objects, self.settings.cache_bytes)

    def commit_of(self, release: str) -> str | None:
        """The commit whose deploy last made ``release`` live."""
        return next((commit for rel, commit in self.history.live_releases() if rel == release and commit), None)

    def previous_release(self) -> str | None:
        """The release that was live before the current one."""
        live = self.state.live_release()
        return next((rel for rel, _ in self.history.live_releases() if rel != live), None)

    # -- operator actions ---------------------------------------------------

    def rollback(self, to: str | None = None) -> Deploy:
        """Re-point live to a retained release with no build, and pin it.

        Waits for a deploy in progress first, then goes exactly one release
        back from what is live then, or to ``to``.
        """
        with self.rollout_lock:
            target = to or self.previous_release()
            if self.state.release(target) is None:
                raise StalledError(f"no retained release {target or '(previous)'} to roll back to; "
                                   "see `hotplate history` for release ids", "NoSuchRelease")
            a = Attempt("rollback", commit=self.commit_of(target), target=target)
            d = self.execute(a, leading(ROLLBACK) if self.leads() else ROLLBACK)
            if d.outcome == "succeeded":
                self.state.pin(target)
                self.emit(d, f"pinned to {target}: auto-sync is suspended until `hotplate resume`")
            return d

    def resume(self) -> bool:
        """Lift a rollback's pin; False if nothing was pinned."""
        if self.state.pinned() is None:
            return False
        self.state.pin(None)
        self.wake("resume")
        return True

    def retry(self) -> str:
        """Deploy the branch tip again even though it failed; returns why it is retried."""
        tip = self.source.tip() if self.source else None
        if tip is None:
            raise StalledError("nothing to retry: the tracked branch does not exist", "BranchMissing")
        if self.state.pinned():
            raise StalledError(f"live is pinned to {self.state.pinned()} by a rollback; `hotplate resume` first",
                               "Pinned")
        if tip == self.state.live_commit():
            raise StalledError(f"{tip[:12]} is live already; nothing to retry", "AlreadyLive")
        self.force(tip, "retry")
        return tip

    def force(self, tip: str, trigger: str) -> None:
        self.forced = (tip, trigger)
        self.backoff.forget(tip)
        self.wake(trigger)

    def desired_config(self, tip: str | None) -> str | None:
        """The digest of the config set deploying ``tip`` now would give its
        release; None for none (or a config.yaml the deploy will refuse)."""
        if self.source is not None and not self.source.builds:
            return self.source.config()
        store = ConfigStore(self.state)
        try:
            return digest(store.merged(self.source.show(tip, COMMITTED) if self.source and tip else None))
        except HotplateError:
            return None

    def change_config(self, set_: dict[str, str], unset: list[str], secret: bool) -> dict:
        """``hotplate config set/unset``: store the change, then deploy the
        tip again so that new workers get it (a rollback's pin holds it back
        until ``hotplate resume``)."""
        ConfigStore(self.state).change(set_, unset, secret)
        tip = self.source.tip() if self.source else None
        desired = self.desired_config(tip)
        live = self.state.release(self.state.live_release())
        pending = tip is not None and (live and live.config) != desired
        if pending and not self.state.pinned():
            self.force(tip, "config")
        return {"commit": tip, "config": desired, "deploying": pending and not self.state.pinned(),
                "pinned": self.state.pinned()}

    def revert(self, sha: str | None = None, force: bool = False) -> str:
        """Commit a revert of ``sha`` (default: the branch tip) and deploy it."""
        target = sha or self.source.tip()
        if target is None:
            raise StalledError("nothing to revert: the branch does not exist", "BranchMissing")
        new_tip = self.source.revert(target, force)
        self.wake("revert")
        return new_tip

    # -- streaming ----------------------------------------------------------

    def follow(self, sha: str, timeout: float = 600):
        """Yield the progress lines of the deploy that puts ``sha`` (or a newer
        push that supersedes it) live; used by the push hook."""
        deadline = time.monotonic() + timeout
        seen: set[int] = set()
        first_pass = self.started
        self.wake("push")
        while True:
            d = self.wait_for_deploy(sha, seen, deadline, first_pass)
            if d is None:
                yield from self.idle_reason(sha)
                return
            seen.add(d.id)
            if d.commit != sha:
                yield f"a newer push ({d.commit[:12]}) supersedes this one; following its deploy"
            yield from self.stream(d, deadline)
            if not d.done:
                yield (f"still deploying after {timeout:.0f}s; the push returns now: follow it with "
                       f"`hotplate logs {d.id}` and `hotplate status`")
                return
            if d.commit == sha or d.commit == self.observed:
                return

    def covers(self, sha: str, other: str | None) -> bool:
        """Whether deploying ``other`` deploys ``sha`` too (same or newer commit)."""
        return other is not None and (other == sha or self.source.is_ancestor(sha, other))

    def wait_for_deploy(self, sha: str, seen: set[int], deadline: float, first_pass: int) -> Deploy | None:
        """The next deploy covering ``sha``, or None once the loop has settled
        without deploying it (already live, failed before, pinned), or once a
        whole pass begun after the push ended in an error outside any deploy."""
        with self.cond:
            while time.monotonic() < deadline:
                d = self.active
                if d is not None and d.id not in seen and self.covers(sha, d.commit):
                    return d
                if d is None and self.last_error and self.ended > first_pass:
                    return None
                try:
                    settled = d is None and not self.wakeup.is_set() and self.observed is not None and \
                        self.settled(self.observed)
                except sqlite3.Error:
                    settled = False  # the history is unreadable: the loop's pass says so (last_error)
                if settled and self.covers(sha, self.observed):
                    return None
                self.cond.wait(0.2)
        return None

    def idle_reason(self, sha: str):
        live, live_commit = self.state.live_release(), self.state.live_commit()
        if self.last_error and live_commit != sha:
            yield (f"not deployed: the controller failed before deploying it ({self.last_error}); live stays on "
                   f"{live}; it tries again on the next push, poll or `hotplate sync`")
        elif self.state.pinned():
            yield f"not deployed: live is pinned to {self.state.pinned()} by a rollback; run `hotplate resume`"
        elif failure := self.history.failure(sha):
            yield (f"not deployed: this commit failed before (deploy {failure['id']}: {failure['reason']}); "
                   "push a fix, or `hotplate retry`")
        elif live_commit == sha:
            yield f"already live: release {live}"
        elif self.backoff.wait(sha) > 0:
            yield f"not deployed yet: retrying in {self.backoff.wait(sha):.0f}s after an error; live is {live}"
        else:
            yield f"live is {live_commit and live_commit[:12]} (release {live})"

    def stream(self, d: Deploy, deadline: float):
        i = 0
        while time.monotonic() < deadline:
            with self.cond:
                while i >= len(d.lines) and not d.done and time.monotonic() < deadline:
                    self.cond.wait(0.5)
                lines, i = d.lines[i:], len(d.lines)
                done = d.done
            yield from lines
            if done and i >= len(d.lines):
                return


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


def _module_record(m) -> dict:
    return {"name": m.name, "source": m.source, "key": m.key, "ok": m.ok, "cached": m.cached,
            "seconds": round(m.seconds, 4), "diagnostics": m.diagnostics}
