"""The reconcile loop: compare desired (branch tip) with live, act, repeat.

Level-triggered, like a Kubernetes controller: triggers (push hook, webhook,
poll, ``hotplate sync``) only wake the loop; each pass reads the branch tip
again, so a burst of pushes coalesces into the deploy in progress plus one
deploy of the newest commit. One rollout at a time.

A deploy runs the stages in order: checkout -> plan -> build -> release
(smoke check) -> switch ``current`` -> roll workers -> health gate -> record.
Anything failing before the switch leaves live untouched; anything failing
after it switches back and rolls the previous release in again.
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .build import Builder, BuildResult
from .errors import BuildError, HotplateError, RetryableError, StalledError
from .pipeline import format_module
from .plan import load_manifest
from .record import History
from .release import Release, assemble
from .rollout import GateSettings, RolloutError, ServerProcess, health_gate, roll
from .source import Source
from .state import State

log = logging.getLogger("hotplate.controller")


@dataclass(frozen=True)
class Settings:
    """How the controller behaves (``hotplate up`` flags)."""

    branch: str = "main"
    poll_interval: float = 30.0
    keep_releases: int = 10
    gate: GateSettings = GateSettings()


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

    def __init__(self, state: State, source: Source | None, server: ServerProcess, settings: Settings):
        self.state = state
        self.source = source
        self.server = server
        self.settings = settings
        self.history = History(state.db)
        self.cond = threading.Condition()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.rollout_lock = threading.Lock()
        self.active: Deploy | None = None
        self.trigger = "startup"
        self.observed: str | None = None
        self.last_error: str | None = None

    # -- the loop ---------------------------------------------------------

    def recover(self) -> None:
        """After a restart: drop half-made releases, close interrupted deploys.
        ``current`` only ever points at a complete release, so live is intact."""
        for staging in self.state.releases.glob(".staging-*"):
            shutil.rmtree(staging, ignore_errors=True)
        n = self.history.interrupt_unfinished()
        if n:
            log.warning("%d deploy(s) were interrupted by a controller stop; live stayed on %s",
                        n, self.state.live_release())

    def run(self) -> None:
        """Reconcile until stopped; sleeps between passes unless woken."""
        while not self.stopping.is_set():
            trigger, self.trigger = self.trigger, "poll"
            try:
                self.reconcile(trigger)
                self.last_error = None
            except RetryableError as e:
                self.last_error = f"{e.reason}: {e}"
                log.warning("%s (will retry)", e)
            except Exception as e:  # the loop must survive anything
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("reconcile failed")
            self.wakeup.wait(self.interval())
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
        """One pass: deploy the branch tip if it is not live, not failed and not pinned."""
        if self.source is None:
            return
        self.source.fetch()
        tip = self.observed = self.source.tip()
        with self.cond:
            self.cond.notify_all()
        if tip is None or self.pinned() or tip == self.live_commit() or self.history.failure(tip):
            return
        self.deploy_commit(tip, trigger)

    def pinned(self) -> str | None:
        return self.history.setting("pinned")

    def live_commit(self) -> str | None:
        return self.history.setting("live_commit")

    # -- deploying --------------------------------------------------------

    def deploy_commit(self, sha: str, trigger: str) -> Deploy:
        """Check out a commit and deploy its tree."""
        info = self.source.commit_info(sha)
        with self.rollout_lock:
            d = self.begin(trigger, info)
            stages: dict[str, float] = {}
            app = None
            try:
                with self.stage(stages, "checkout"):
                    app = self.source.checkout(sha)
                self.emit(d, f"deploying {sha[:12]} ({info['message'][:60]}) by {info['author']}, trigger: {trigger}")
                if self.deploy_tree(d, app, stages, {"commit": sha, "trigger": trigger}):
                    self.history.set("live_commit", sha)
            finally:
                if app is not None:
                    shutil.rmtree(app, ignore_errors=True)
            return d

    def deploy_tree(self, d: Deploy, app: Path, stages: dict, meta: dict) -> Release | None:
        """Plan, build, release and put live one app tree; records the outcome."""
        previous = self.state.live_release()
        build: BuildResult | None = None
        try:
            with self.stage(stages, "plan"):
                manifest = load_manifest(app)
            self.emit(d, f"manifest ok: {len(manifest.modules)} modules, "
                         f"{sum(len(m.routes) for m in manifest.modules)} routes")
            with self.stage(stages, "build"):
                build = Builder(app, self.state.cache).build(manifest, on_result=lambda m: self.emit_module(d, m))
            self.emit(d, f"build: {build.compiled} compiled, {len(build.modules) - build.compiled} cached "
                         f"in {build.seconds * 1000:.0f} ms")
            with self.stage(stages, "release"):
                release = assemble(app, manifest, build, self.state.releases, meta)
            self.emit(d, f"release {release.id} {'reused' if release.reused else 'created'} (smoke check passed)")
            self.go_live(d, release.id, previous, stages)
        except StalledError as e:
            results = e.results if isinstance(e, BuildError) else (build.modules if build else [])
            self.fail(d, "failed", e, stages, results, previous)
            return None
        except RolloutError as e:
            self.fail(d, "rolled_back", e, stages, build.modules if build else [], previous)
            return None
        self.finish(d, "succeeded", stages, build.modules, release=release.id)
        self.prune()
        return release

    def go_live(self, d: Deploy, release: str, previous: str | None, stages: dict) -> None:
        """Switch, roll, verify, gate; on a failed roll or gate, roll back and raise."""
        try:
            with self.stage(stages, "roll"):
                self.state.switch(release)
                gen = roll(self.server, release)
            self.emit(d, f"live: {len(gen.pids)} workers serve {release} (roll took {gen.seconds * 1000:.0f} ms)")
            with self.stage(stages, "gate"):
                info = json.loads((self.state.release_path(release) / "release.json").read_text())
                health_gate(self.server, gen, info, self.settings.gate, lambda line: self.emit(d, line))
        except RolloutError as e:
            self.emit(d, f"rollout failed: {e}")
            self.restore(d, previous)
            raise

    def restore(self, d: Deploy, previous: str | None) -> None:
        """Put the previous release back in front of traffic."""
        if previous is None:
            self.state.current.unlink(missing_ok=True)
            self.emit(d, "no previous release to roll back to")
            return
        self.state.switch(previous)
        gen = roll(self.server, previous)
        self.emit(d, f"rolled back: {len(gen.pids)} workers serve {previous} again")

    # -- progress and records ----------------------------------------------

    def begin(self, trigger: str, info: dict | None) -> Deploy:
        deploy_id = self.history.start(trigger, info, self.state.live_release())
        d = Deploy(deploy_id, (info or {}).get("sha"), trigger)
        with self.cond:
            self.active = d
            self.cond.notify_all()
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

    @contextmanager
    def stage(self, stages: dict, name: str):
        start = time.monotonic()
        try:
            yield
        finally:
            stages[name] = round(time.monotonic() - start, 4)

    def fail(self, d: Deploy, outcome: str, error: HotplateError, stages: dict, modules, previous: str | None) -> None:
        for line in str(error).splitlines():
            self.emit(d, line)
        self.emit(d, f"deploy {outcome.replace('_', ' ')} ({error.reason}); live stays on {previous or 'nothing'}")
        self.finish(d, outcome, stages, modules, reason=error.reason, detail=str(error))

    def finish(self, d: Deploy, outcome: str, stages: dict, modules, reason: str | None = None,
               detail: str | None = None, release: str | None = None) -> None:
        if outcome == "succeeded":
            to_live = sum(v for k, v in stages.items() if k != "gate")
            self.emit(d, f"deploy succeeded: release {release} went live {to_live * 1000:.0f} ms after the deploy "
                         f"started and passed its health gate")
        self.history.finish(d.id, outcome, reason=reason, detail=detail, release=release, stages=stages,
                            modules=[_module_record(m) for m in modules], log="\n".join(d.lines))
        with self.cond:
            d.done, d.outcome = True, outcome
            self.active = None
            self.cond.notify_all()

    def prune(self) -> None:
        """Keep the newest N releases, never the live or the previous one."""
        keep = {self.state.live_release(), self.previous_release()}
        releases = sorted((p for p in self.state.releases.iterdir() if not p.name.startswith(".")),
                          key=lambda p: p.stat().st_mtime, reverse=True)
        for path in releases[self.settings.keep_releases:]:
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def commit_of(self, release: str) -> str | None:
        """The commit whose deploy last made ``release`` live."""
        return next((commit for rel, commit in self.history.live_releases() if rel == release and commit), None)

    def previous_release(self) -> str | None:
        """The release that was live before the current one."""
        live = self.state.live_release()
        return next((rel for rel, _ in self.history.live_releases() if rel != live), None)

    # -- operator actions ---------------------------------------------------

    def rollback(self, to: str | None = None) -> Deploy:
        """Re-point live to a retained release with no build, and pin it."""
        target = to or self.previous_release()
        if not target or not (self.state.release_path(target) / "release.json").exists():
            raise StalledError(f"no retained release {target or '(previous)'} to roll back to; "
                               "see `hotplate history` for release ids", "NoSuchRelease")
        with self.rollout_lock:
            d = self.begin("rollback", None)
            previous, stages = self.state.live_release(), {}
            try:
                self.go_live(d, target, previous, stages)
            except RolloutError as e:
                self.fail(d, "failed", e, stages, [], previous)
                return d
            self.history.set("pinned", target)
            self.history.set("live_commit", self.commit_of(target))
            self.emit(d, f"pinned to {target}: auto-sync is suspended until `hotplate resume`")
            self.finish(d, "succeeded", stages, [], release=target)
            return d

    def resume(self) -> None:
        self.history.set("pinned", None)
        self.wake("resume")

    def revert(self, sha: str | None = None) -> str:
        """Commit a revert of ``sha`` (default: the branch tip) and deploy it."""
        target = sha or self.source.tip()
        if target is None:
            raise StalledError("nothing to revert: the branch does not exist", "BranchMissing")
        new_tip = self.source.revert(target)
        self.wake("revert")
        return new_tip

    # -- streaming ----------------------------------------------------------

    def follow(self, sha: str, timeout: float = 600):
        """Yield the progress lines of the deploy that puts ``sha`` (or a newer
        push that supersedes it) live; used by the push hook."""
        deadline = time.monotonic() + timeout
        seen: set[int] = set()
        self.wake("push")
        while True:
            d = self.wait_for_deploy(sha, seen, deadline)
            if d is None:
                yield from self.idle_reason(sha)
                return
            seen.add(d.id)
            if d.commit != sha:
                yield f"a newer push ({d.commit[:12]}) supersedes this one; following its deploy"
            yield from self.stream(d, deadline)
            if d.commit == sha or d.commit == self.observed:
                return

    def covers(self, sha: str, other: str | None) -> bool:
        """Whether deploying ``other`` deploys ``sha`` too (same or newer commit)."""
        return other is not None and (other == sha or self.source.is_ancestor(sha, other))

    def wait_for_deploy(self, sha: str, seen: set[int], deadline: float) -> Deploy | None:
        """The next deploy covering ``sha``, or None once the loop has settled
        without deploying it (already live, failed before, or pinned)."""
        with self.cond:
            while time.monotonic() < deadline:
                d = self.active
                if d is not None and d.id not in seen and self.covers(sha, d.commit):
                    return d
                settled = d is None and not self.wakeup.is_set() and self.observed is not None and (
                    self.observed == self.live_commit() or self.history.failure(self.observed) or self.pinned())
                if settled and self.covers(sha, self.observed):
                    return None
                self.cond.wait(0.2)
        return None

    def idle_reason(self, sha: str):
        failure = self.history.failure(sha)
        if self.pinned():
            yield f"not deployed: live is pinned to {self.pinned()} by a rollback; run `hotplate resume`"
        elif failure:
            yield f"not deployed: this commit failed before (deploy {failure['id']}: {failure['reason']}); push a fix"
        elif self.live_commit() == sha:
            yield f"already live: release {self.state.live_release()}"
        else:
            yield f"live is {self.live_commit() and self.live_commit()[:12]} (release {self.state.live_release()})"

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


def _module_record(m) -> dict:
    return {"name": m.name, "source": m.source, "key": m.key, "ok": m.ok, "cached": m.cached,
            "seconds": round(m.seconds, 4), "diagnostics": m.diagnostics}
