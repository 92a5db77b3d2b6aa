"""One deploy as an ordered list of stages, after Flux's reconcilers.

Each stage takes the :class:`Attempt`, fills in its part, or raises a typed
error (:mod:`controller.errors`) that says what happens next. The lists at
the bottom are the only ways anything gets built or put live: ``up`` deploys
commits, ``dev`` a working tree, ``rollback`` a retained release, and
``build``/``serve`` run the stages that need no server. Ending a deploy
(recording it, putting ``current`` back) is the controller's one
:meth:`~controller.reconcile.Controller.conclude`.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import git

from hotplate.server import sanitize
from hotplate.server.contract.fleet import Target
from hotplate.server.contract.release import ReleaseSpec

from . import recall
from .appconfig import COMMITTED, ConfigStore, digest
from .build import Builder, BuildResult, ModuleBuild
from .errors import DISK_FULL, HotplateError, RetryableError
from .plan import Manifest, load_manifest
from .registry import Transfer, pull
from .release import Check, Forked, Release, assemble, smoke_check
from .rollout import GateSettings, Generation, Hold, ServerProcess, health_gate, roll
from .state import State
from .verify import Policy

if TYPE_CHECKING:  # GitPython is slow to import; smoke-check children import this module
    from .source import Source
    from .waves import Waves

#: Seconds a deploy waits for a dead app server to be restarted before it
#: gives up and is retried later.
SERVER_WAIT_S = 20


#: One step of a deploy: a :class:`Pipeline` method, run on the deploy's :class:`Attempt`.
Stage = Callable[["Pipeline", "Attempt"], None]


@dataclass
class Attempt:
    """What one deploy knows; each stage fills in its part.

    :param commit: the commit to check out, or None for a working tree.
    :param tree: the app directory: given (``dev``, ``build``) or checked out.
    :param target: the release to put live: given (rollback) or built.
    :param actor: who asked for it (a token's name, a pusher), or None.
    """

    trigger: str
    commit: str | None = None
    tree: Path | None = None
    target: str | None = None
    meta: dict = field(default_factory=dict)
    actor: str | None = None
    previous: str | None = None
    previous_commit: str | None = None
    manifest: Manifest | None = None
    config: str | None = None
    build: BuildResult | None = None
    release: Release | None = None
    generation: Generation | None = None
    forked: Forked | None = None
    held: Hold | None = None  # the roll's workers, forked ahead
    checked_out: bool = False
    switched: bool = False
    made_of: str | None = None  # what its release is made of (controller/recall.py)
    skip: frozenset = frozenset()  # stages a recalled release has no need of
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def modules(self) -> tuple[ModuleBuild, ...]:
        return self.build.modules if self.build else ()


class Pipeline:
    """Runs stages for one deploy.

    :param emit: called with each progress line (streamed to ``git push``).
    :param on_module: called with each module's build result as it finishes.
    """

    def __init__(self, state: State, emit: Callable[[str], None], on_module=None, source: Source | None = None,
                 server: ServerProcess | None = None, gate: GateSettings = GateSettings(),
                 policy: Policy | None = None, sanitized: bool = False, leader: Waves | None = None):
        self.state = state
        self.emit = emit
        self.on_module = on_module
        self.source = source
        self.server = server
        self.gate_settings = gate
        self.policy = policy
        self.sanitized = sanitized
        self.leader = leader  # a fleet leader's side of the rollout (controller/waves.py)

    def run(self, a: Attempt, stages: tuple[Stage, ...]) -> None:
        """Each stage in turn, timed under its name (the history's stage timings)."""
        for stage in stages:
            if stage in a.skip:
                continue
            start = time.monotonic()
            try:
                stage(self, a)
            finally:
                a.stages[stage.__name__] = round(time.monotonic() - start, 4)

    def server_up(self, a: Attempt) -> None:
        """The app server must be running to roll onto anything: wait (visibly)
        while its supervisor restarts it. Then fork the roll's workers,
        held until it (or take those held as the push began): their fork
        and cgroup are done while the deploy builds."""
        if self.server.pid is None:
            self.emit(f"the app server is down ({self.server.why_down()}); "
                      f"waiting up to {SERVER_WAIT_S}s for it to restart")
            if not self.server.wait_up(SERVER_WAIT_S):
                raise RetryableError(f"the app server did not come back within {SERVER_WAIT_S}s: "
                                     f"{self.server.why_down()}; see {self.server.log}",
                                     "ServerDown")
            self.emit("the app server is back")
        a.held = self.server.ahead.take() or Hold(self.server)

    def verify(self, a: Attempt) -> None:
        """With ``--verify``, the commit must carry a trusted signature."""
        if self.policy is not None:
            self.emit(f"signature: {self.policy.check(self.state.repo, a.commit)}")

    def recall(self, a: Attempt) -> None:
        """A tree released here before, with the same config set and
        toolchain, is that release again: nothing to check out, plan or
        build (controller/recall.py). Whatever is wrong with the commit's
        config, plan says."""
        if self.sanitized:
            return
        try:
            committed = self.source.blob(a.commit, COMMITTED)
            config = digest(ConfigStore(self.state).merged(committed.decode() if committed is not None else None))
            a.made_of = recall.key(self.source.tree(a.commit), config)
        except (HotplateError, ValueError, OSError, git.GitError):
            return
        found = recall.find(self.state, a.made_of)
        if found is None:
            return
        self.announce(a)
        a.config, a.target = config, found
        a.build = recall.build_of(self.state, found)
        for module in a.build.modules:
            if self.on_module is not None:
                self.on_module(module)
        a.skip = frozenset((Pipeline.checkout, Pipeline.plan, Pipeline.build, Pipeline.release))
        built = self.state.build_info(found).get("commit")
        self.emit(f"release {found} recalled: this tree was released as it before"
                  f"{f' (commit {built[:12]})' if isinstance(built, str) else ''}; nothing to check out or build")

    def announce(self, a: Attempt) -> None:
        self.emit(f"deploying {a.commit[:12]} ({a.meta.get('message', '')[:60]}) by {a.meta.get('author')}, "
                  f"trigger: {a.trigger}")

    def checkout(self, a: Attempt) -> None:
        """Extract the commit into a directory of this deploy's own."""
        try:
            a.tree = self.source.checkout(a.commit)
        except OSError as e:
            if e.errno in DISK_FULL:
                raise  # a full disk is retried, whichever stage meets it (outcome.classify)
            raise RetryableError(f"checking out {a.commit[:12]} into {self.state.sources} failed: {e}",
                                 "CheckoutFailed") from None
        a.checked_out = True
        self.announce(a)

    def plan(self, a: Attempt) -> None:
        """Validate the manifest; merge, seal and render the config set the
        release will run with (committed config.yaml under the operator's)."""
        a.manifest = load_manifest(a.tree)
        self.emit(f"manifest ok: {len(a.manifest.modules)} modules, "
                  f"{sum(len(m.routes) for m in a.manifest.modules)} routes")
        committed = a.tree / COMMITTED
        config = ConfigStore(self.state)
        values = config.merged(committed.read_text() if committed.is_file() else None)
        a.config = config.seal(values)
        config.render(a.config)
        if values:
            self.emit(f"config: {len(values)} keys (set {a.config})")

    def build(self, a: Attempt) -> None:
        flags = sanitize.FLAGS if self.sanitized else ()
        quick = a.trigger == "dev" and not self.sanitized  # (hotplate dev: tcc serves, gcc says)
        a.build = Builder(a.tree, self.state.cache, extra_flags=flags, quick=quick).build(
            a.manifest, on_result=self.on_module, on_compile=lambda: self.fork_check(a))
        self.emit(f"build: {a.build.compiled} compiled, {len(a.build.modules) - a.build.compiled} cached "
                  f"in {a.build.seconds * 1000:.0f} ms")

    def fork_check(self, a: Attempt) -> None:
        """While the compilers run: the release's smoke check, forked from
        the master ahead (controller/release.py), where one runs."""
        if not self.sanitized and self.server is not None and self.server.pid is not None:
            a.forked = Forked(self.state)

    def release(self, a: Attempt) -> None:
        meta = {"commit": a.commit, "trigger": a.trigger} if a.commit else {"trigger": a.trigger}
        env = sanitize.environment(self.state.sanitizer) if self.sanitized else None
        a.release = assemble(a.tree, a.manifest, a.build, self.state.releases, meta, a.config, self.check(env),
                             a.forked)
        a.target = a.release.id
        if a.made_of is not None:
            recall.remember(self.state, a.made_of, a.target)
        self.emit(f"release {a.target} {'reused' if a.release.reused else 'created'} (smoke check passed)")

    def pull(self, a: Attempt) -> None:
        """A follower's build: the leader's release, from the registry,
        smoke-checked here before it is kept (controller/registry.py)."""
        got = self.fetch(a.meta.get("release") or a.commit)
        a.target = got.release
        self.emit(f"pulled release {a.target} from {self.source.url}: {got.moved} of {got.blobs + 1} blobs fetched, "
                  "smoke check passed")

    def fetch(self, tag: str) -> Transfer:
        """The release ``tag`` names, pulled and smoke-checked into place (or found there)."""
        return pull(self.source.url, tag, self.state.releases, self.state.cache, self.check_pulled)

    def check_pulled(self, release_dir: Path) -> None:
        """A pulled release, before it is kept: its config set (shared by
        the leader, ``config.age``) kept and rendered, then the smoke check."""
        spec = ReleaseSpec.load(release_dir)
        if spec.config:
            config = ConfigStore(self.state)
            shared = release_dir / "config.age"
            config.adopt(spec.config, shared.read_bytes() if shared.exists() else b"")
            config.render(spec.config)
        smoke_check(release_dir, self.check())

    def check(self, env: dict | None = None) -> Check:
        """How this host's smoke checks run: as its workers do."""
        return Check(self.state.worker_user, env, self.state)

    def publish(self, a: Attempt) -> None:
        """A fleet's leader: the release goes to the registry before it goes
        live anywhere, so that every wave can pull it."""
        self.emit(self.leader.publish(self.state.release_path(a.target), self.described(a.target, a.commit, a.meta),
                                     ConfigStore(self.state)))

    def waves(self, a: Attempt) -> None:
        """A fleet's leader, once live and healthy itself (the canary): the
        other hosts, wave after wave (controller/waves.py)."""
        previous = self.described(a.previous, a.previous_commit, {}) if a.previous else None
        self.leader.roll_out(self.described(a.target, a.commit, a.meta), previous, self.emit)

    def abandon(self, a: Attempt) -> None:
        """A new leader ends the rollout a lost one left unfinished: every
        host goes back to the release before it (this one by the stages
        that follow), and the new leader then deploys the tip afresh."""
        rollout = self.leader.unfinished()
        if rollout is None:
            return
        self.leader.end(rollout, f"LeaderLost: {rollout.leader} was lost at wave {rollout.wave} of "
                                f"{len(rollout.waves) - 1}")
        self.emit(f"the rollout of {rollout.target.release} begun by {rollout.leader} stopped at wave "
                  f"{rollout.wave} of {len(rollout.waves) - 1} (its leader was lost); every host goes back to "
                  f"{rollout.back}")

    def described(self, release: str, commit: str | None, meta: dict) -> Target:
        """A release as a fleet's rollout names it."""
        spec = self.state.release(release)
        return Target(release, commit, meta.get("message", ""), meta.get("author", ""), spec.config if spec else None)

    def switch(self, a: Attempt) -> None:
        """Point ``current`` at the target: new workers load it (and its
        config set, rendered again if memory lost it) from here on."""
        spec = self.state.release(a.target)
        ConfigStore(self.state).render(spec.config if spec else None)
        self.state.switch(a.target, a.commit)
        a.switched = True

    def roll(self, a: Attempt) -> None:
        """Start a generation on the target, unless every worker serves it
        already with every module loaded (a commit that changes no module, a
        save that changes no source): new workers would load the same code.
        Those workers still go through the gate (its checks, not its bake)."""
        serving = {pid: r for pid, r in self.server.reports().items() if not r.retiring}
        if a.target == a.previous and serving and all(r.release == a.target for r in serving.values()):
            broken = sorted({m.name for r in serving.values() for m in r.modules if not m.ok})
            if not broken:
                self.emit(f"release {a.target} is live already: nothing to roll")
                a.generation = Generation(a.target, sorted(serving), 0.0, serving, reused=True)
                return
            self.emit(f"release {a.target} is live, but module {', '.join(broken)} did not load in its workers: "
                      "rolling fresh ones")
        self.roll_fresh(a)

    def roll_fresh(self, a: Attempt) -> None:
        """Start a generation on the target whatever serves now (``hotplate restart``)."""
        held, a.held = a.held, None
        a.generation = roll(self.server, a.target, held=held.before() if held else None)
        self.emit(f"live: {len(a.generation.pids)} workers serve {a.target} "
                  f"(roll took {a.generation.seconds * 1000:.0f} ms)")

    def gate(self, a: Attempt) -> None:
        if a.generation is not None:
            health_gate(self.server, a.generation, self.state.release(a.target), self.gate_settings, self.emit)

    def restore(self, a: Attempt) -> None:
        """Put the release that was live before back in front of traffic."""
        if a.previous is None:
            self.state.current.unlink(missing_ok=True)
            self.emit("no previous release to roll back to")
            return
        self.state.switch(a.previous, a.previous_commit)
        if self.server.pid is None:
            self.emit(f"current points at {a.previous} again; the app server restarts on it")
            return
        gen = roll(self.server, a.previous)
        self.emit(f"rolled back: {len(gen.pids)} workers serve {a.previous} again")

    def cleanup(self, a: Attempt) -> None:
        if a.forked is not None:
            a.forked.close()  # (a build that failed, or a release found made)
        if a.held is not None:
            a.held.let_go()  # (a deploy that did not roll)
        if a.checked_out and a.tree is not None:
            shutil.rmtree(a.tree, ignore_errors=True)


def build_release(app: Path, state: State, on_module=None, emit: Callable[[str], None] = lambda line: None) -> Attempt:
    """Run the :data:`BUILD` stages on an app directory; raises at the first failing one."""
    a = Attempt("build", tree=Path(app))
    Pipeline(state, emit, on_module).run(a, BUILD)
    return a


def format_module(result: ModuleBuild) -> str:
    """One progress line for a built module."""
    how = "cached" if result.cached else f"compiled in {result.seconds * 1000:.0f} ms"
    if not result.ok:
        how = "FAILED"
    return f"{result.name} ({result.source}): {how}"


# The stages of each kind of deploy, by reference (a misspelt one fails at import).

#: Deploy the branch tip (``hotplate up``).
COMMIT = (Pipeline.verify, Pipeline.server_up, Pipeline.recall, Pipeline.checkout, Pipeline.plan, Pipeline.build, Pipeline.release,
          Pipeline.switch, Pipeline.roll, Pipeline.gate)
#: Deploy what a fleet's leader published (``hotplate up --follow``, a fleet's other hosts).
FOLLOW = (Pipeline.server_up, Pipeline.pull, Pipeline.switch, Pipeline.roll, Pipeline.gate)
#: Deploy a working tree with no git (``hotplate dev``).
TREE = (Pipeline.server_up, Pipeline.plan, Pipeline.build, Pipeline.release, Pipeline.switch, Pipeline.roll,
        Pipeline.gate)
#: Put a retained release back live (``hotplate rollback``).
ROLLBACK = (Pipeline.server_up, Pipeline.switch, Pipeline.roll, Pipeline.gate)
#: Fresh workers on what is live, through the gate (``hotplate restart``).
RESTART = (Pipeline.server_up, Pipeline.roll_fresh, Pipeline.gate)
#: Build a release and stop (``hotplate build``, ``hotplate serve``).
BUILD = (Pipeline.plan, Pipeline.build, Pipeline.release)


def leading(stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """The same deploy by a fleet's leader: published before it goes live
    here, rolled out over the fleet once it passed its gate here."""
    at = stages.index(Pipeline.switch)
    return (*stages[:at], Pipeline.publish, *stages[at:], Pipeline.waves)
