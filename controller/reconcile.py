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
import sqlite3
import threading
import time
from dataclasses import dataclass, field

from prometheus_client import Histogram

from hotplate.server.contract.fleet import Failure

from . import heap
from .appconfig import COMMITTED, ConfigStore, digest
from .deploy import COMMIT, FOLLOW, ROLLBACK, Attempt, Pipeline, Stage, format_module, leading
from .errors import HotplateError, RetryableError
from .notify import Notifier
from .outcome import Backoff, classify, final_line
from .ready import Facts, Ready, derive
from .publish import PUBLISH_RETRY_S, Publisher
from .record import History
from .retention import prune
from .rollout import GateSettings, ServerProcess
from .source import Source
from .state import State
from .verify import Policy

log = logging.getLogger("hotplate.controller")
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
    ended: float = 0.0  # time.monotonic() when done


class Controller:
    """Owns the state directory: the only writer of ``current``, releases and history."""

    def __init__(self, state: State, source: Source | None, server: ServerProcess, settings: Settings,
                 history: History, notifier: Notifier | None = None):
        self.state = state
        self.notifier = notifier or Notifier([], None, history)
        # Not in a registry: /metrics collects it (controller/api.py).
        self.stage_seconds = Histogram("hotplate_deploy_stage_seconds", "Time in each stage of a deploy", ["stage"],
                                       registry=None, buckets=STAGE_BUCKETS)
        self.server = server
        self.settings = settings
        self.history = history
        self.cond = threading.Condition()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.rollout_lock = threading.RLock()  # a rollback holds it across its own deploy
        self.active: Deploy | None = None
        self.recent: Deploy | None = None  # the last one that ended: a push hook may ask after its end
        self.trigger = "startup"
        self.observed: str | None = None
        self.last_error: str | None = None
        self.backoff = Backoff()
        # (commit, trigger): a commit to deploy although it failed or is live
        # (`hotplate retry`; `hotplate config set` on the live commit)
        self.forced: tuple[str, str] | None = None
        self.asked: dict[str, str] = {}  # commit -> who asked for its deploy (a pusher, a token's name)
        # in a fleet (--fleet): its membership, the waves it rolls out while it leads,
        # and what this host deploys from when it leads and when not (:attr:`source`)
        self.fleet = self.waves = None
        self.build_source, self.follow_source = source, None
        self.last_failure: Failure | None = None  # this host's last deploy that did not succeed, for the fleet
        # (commit, config set) whose deploy failed: not tried again by itself
        self.config_failed: tuple[str, str | None] | None = None
        self.publisher = Publisher(state, settings.publish, lambda: self.source,
                                   lambda: self.fleet is None or self.leads())
        # Passes are numbered as they start; `ended` is the number of the last
        # one that ended, so that a follower knows when one begun after its push is over.
        self.started = self.ended = 0

    # -- the loop ---------------------------------------------------------

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
            if self.publisher.behind():  # the registry was down when it went live
                log.info("%s", self.publisher.publish())
            with self.cond:
                self.ended = this_pass
                self.cond.notify_all()
            self.wakeup.wait(min(self.interval(), self.backoff.wait(self.observed) or float("inf"),
                                 PUBLISH_RETRY_S if self.publisher.behind() else float("inf")))
            self.wakeup.clear()

    def interval(self) -> float:
        """The poll interval with up to 20% jitter, so mirrors do not fetch in step."""
        return self.settings.poll_interval * (1 + random.random() * 0.2)

    def wake(self, trigger: str) -> None:
        self.trigger = trigger
        self.wakeup.set()

    def push_arriving(self) -> None:
        """A push's objects are arriving (controller/refwatch.py): hold the
        workers its deploy will roll, and start what it reads commits
        through. Not while a deploy runs: its roll would take them."""
        if not self.rollout_lock.acquire(blocking=False):
            return
        try:
            self.server.ahead.hold()
        finally:
            self.rollout_lock.release()
        self.build_source.warm()

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()

    def reconcile(self, trigger: str) -> None:
        """One pass: deploy the branch tip unless it is live, pinned, failed
        (stalled until a new commit) or backing off after an error."""
        if self.fleet is not None:
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
        if self.ready(tip).deploy:
            self.deploy_commit(tip, trigger)
        elif self.source.upcoming and not self.state.release_path(self.source.upcoming).exists():
            self.prefetch(self.source.upcoming)

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

    @property
    def source(self) -> Source | None:
        """What this host deploys from now: its own source, or, in a fleet
        while it does not lead, the release the fleet's rollout names for it
        (controller/fleet.py). Derived from the lease at each read, never
        rebound under the API's threads."""
        return self.build_source if self.fleet is None or self.leads() else self.follow_source

    def facts(self, tip: str | None) -> Facts:
        """What :func:`ready.derive` needs about ``tip``, read now. A history
        that cannot be read gives no failure (status says so, the loop's
        pass fails with it)."""
        live, live_commit = self.state.live_release(), self.state.live_commit()
        desired = None
        if self.source is not None and not self.source.builds:  # a follower: the release its leader sealed
            matches, config_synced = tip is not None and live == self.source.release(), True
        else:
            matches = tip is not None and tip == live_commit
            spec = self.state.release(live)
            desired = self.desired_config(tip) if matches else None
            config_synced = not matches or (spec and spec.config) == desired
        failure = unreadable = None
        if tip is not None and not matches:
            try:
                failure = self.history.failure(tip)
            except sqlite3.Error as e:
                unreadable = str(e)
        return Facts(tip, live, live_commit, matches, config_synced,
                     matches and (tip, desired) == self.config_failed, self.state.pinned(), self.active is not None,
                     failure, bool(self.forced and tip == self.forced[0]), self.backoff.wait(tip) if tip else 0.0,
                     self.last_error, unreadable)

    def ready(self, tip: str | None) -> Ready:
        """Whether ``tip`` is live, and if not, why and whether to deploy it
        now: the one derivation (controller/ready.py)."""
        return derive(self.facts(tip))

    # -- deploying --------------------------------------------------------

    def deploy_commit(self, sha: str, trigger: str) -> Deploy:
        """Check out a commit and deploy its tree."""
        info = self.source.commit_info(sha)
        if self.forced and self.forced[0] == sha:
            trigger, self.forced = self.forced[1], None
        stages = COMMIT if self.source.builds else FOLLOW
        actor = self.asked.pop(sha, None) or self.source.actor(sha)
        return self.execute(Attempt(trigger, commit=sha, meta=info, actor=actor),
                            leading(stages) if self.leads() else stages)

    def end_rollout(self, left) -> Deploy:
        """Lead a fleet whose last rollout was left unfinished (its leader
        was lost): put every host back on the release before it, recorded
        as a deploy of that release; the tip is then deployed afresh."""
        back = left.previous
        a = Attempt("fleet", commit=back and back.commit, target=back and back.release,
                    meta={"message": back.message, "author": back.author} if back else {})
        return self.execute(a, (Pipeline.abandon, *ROLLBACK) if a.target else (Pipeline.abandon,))

    def execute(self, a: Attempt, stages: tuple[Stage, ...]) -> Deploy:
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
            heap.give_back()
            return d

    def prefetch(self, release: str) -> None:
        """A follower: pull and smoke-check the release a rollout will
        soon admit this host to, outside any deploy (nothing is switched).
        Its wave's pull then finds it in place; a failure here is only
        logged: that pull tries again, and its deploy records the outcome."""
        started = time.monotonic()
        try:
            Pipeline(self.state, lambda line: None, source=self.source).fetch(release)
            log.info("fleet: pulled %s ahead of this host's wave (%.0f ms)", release,
                     (time.monotonic() - started) * 1000)
        except Exception as e:
            log.info("fleet: could not pull %s ahead of this host's wave (%s); its deploy pulls it", release, e)

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
            elif self.publisher.due():
                self.emit(d, self.publisher.publish())
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
            self.emit(d, final_line(a, outcome, reason, self.state.live_release(), self.backoff))
            try:
                self.history.finish(d.id, outcome, reason=reason, detail=detail if error else None,
                                    release=a.target, stages=a.stages,
                                    modules=[_module_record(m) for m in (getattr(error, "results", None) or a.modules)],
                                    log="\n".join(d.lines))
            except Exception:
                log.exception("deploy %d: could not record its outcome (%s)", d.id, outcome)
            with self.cond:
                d.done, d.outcome, d.ended = True, outcome, time.monotonic()
                self.active, self.recent = None, d
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
            prune(self.state, self.history, self.settings.keep_releases, self.settings.cache_bytes)

    def leads(self) -> bool:
        """Whether this host leads a fleet: it builds, publishes and rolls out."""
        return self.fleet is not None and self.fleet.leading.is_set()

    def join_fleet(self, fleet, waves, follow_source) -> None:
        """Lead (build, publish, roll out ``waves``) while ``fleet`` holds the
        leader's key, if this host is a candidate; else follow the rollout."""
        self.fleet, self.waves, self.follow_source = fleet, waves, follow_source

    # -- progress and records ----------------------------------------------

    def begin(self, a: Attempt) -> Deploy:
        deploy_id = self.history.start(a.trigger, {**a.meta, "sha": a.commit} if a.commit else a.meta or None,
                                       a.previous, a.actor)
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

    def ask(self, sha: str | None, actor: str | None) -> None:
        """Note who asked for ``sha``'s deploy, for its record (its pusher, the
        token that synced, reverted or retried)."""
        if sha and actor:
            if len(self.asked) > 100:  # (commits asked for and never deployed: superseded)
                self.asked.clear()
            self.asked[sha] = actor

    def force(self, tip: str, trigger: str, actor: str | None = None) -> None:
        """Deploy ``tip`` on the next pass although it failed or is live
        (``hotplate retry``; ``hotplate config set`` on the live commit)."""
        self.ask(tip, actor)
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

def _module_record(m) -> dict:
    return {"name": m.name, "source": m.source, "key": m.key, "ok": m.ok, "cached": m.cached,
            "seconds": round(m.seconds, 4), "diagnostics": m.diagnostics}
