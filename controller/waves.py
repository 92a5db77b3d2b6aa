"""Rolling a release out over a fleet in waves (issue 11).

The leader is the canary: it builds, publishes to the registry and puts the
release live on itself behind its own health gate, as a single host does.
Then :meth:`Waves.roll_out` admits the other hosts a batch at a time through
the rollout key in etcd (controller/fleet.py). Each host pulls the release,
smoke-checks it, rolls and gates it, and reports; the next wave is admitted
only when every host of this one serves the release healthy and has baked.
A host that fails, or a wave that does not get there in time, ends the
rollout ``RolledBack``: every host goes back to the previous release, the
leader too (its deploy fails, and the controller restores it), and the
deploy's record says which host failed and why.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from hotplate.server.contract.fleet import HostReport, Rollout, Target

from .appconfig import ConfigStore
from .errors import RetryableError, RolloutError, StalledError
from .fleet import Fleet, condition
from .registry import push

#: Longest wait between looks at the hosts' reports while a wave rolls;
#: a report that changes wakes the leader sooner (the fleet's watch).
LOOK_S = 0.5


@dataclass(frozen=True)
class WaveSettings:
    """How a rollout moves (``hotplate up --wave-size --wave-bake --wave-timeout``)."""

    size: int = 1  # hosts per wave after the canary
    bake: float = 0.0  # seconds each wave (the canary's too) keeps serving healthy before the next is admitted
    timeout: float = 120.0  # seconds a wave's hosts have to serve the release and pass their health gate


class Waves:
    """The leader's side of a fleet: publish a release, roll it out, or end
    a rollout that a lost leader left."""

    def __init__(self, fleet: Fleet, registry: str, settings: WaveSettings = WaveSettings()):
        self.fleet, self.registry, self.settings = fleet, registry, settings

    def publish(self, release_dir, target: Target, config: ConfigStore) -> str:
        """Push a release to the registry, with its config set encrypted to
        every host of the fleet now; the line that says so. Raises when the
        registry refuses: no host could pull what the waves name."""
        extra = {}
        if target.config:
            recipients = [r.recipient for r in self.fleet.hosts().values() if r.recipient]
            extra["config.age"] = config.share(target.config, recipients)
        sent = push(release_dir, self.registry, tags=(target.commit,) if target.commit else (),
                    annotations=target.annotations(), extra=extra)
        return f"published {target.release} to {self.registry} ({sent.moved} new blobs)"

    def roll_out(self, target: Target, previous: Target | None, emit: Callable[[str], None]) -> None:
        """Admit the fleet's hosts wave after wave; raises (after ending the
        rollout ``RolledBack``) if a host fails or a wave takes too long."""
        hosts = sorted(h for h, report in self.fleet.hosts().items() if h != self.fleet.host and not report.error)
        size = max(1, self.settings.size)
        rollout = Rollout(target, previous, [[self.fleet.host]] + [hosts[i:i + size] for i in range(0, len(hosts), size)],
                          self.fleet.host)
        self.fleet.put_rollout(rollout)
        try:
            for i, wave in enumerate(rollout.waves):
                if i:
                    rollout.wave = i
                    self.fleet.put_rollout(rollout)
                    emit(f"wave {i} of {len(rollout.waves) - 1}: {', '.join(wave)}")
                    self.wait(rollout, wave, time.monotonic() + self.settings.timeout, emit)
                if self.settings.bake and i < len(rollout.waves) - 1:
                    self.wait(rollout, wave, time.monotonic() + self.settings.bake, emit, baking=True)
            rollout.state = "Done"
            self.fleet.put_rollout(rollout)
        except BaseException as e:
            self.end(rollout, f"{getattr(e, 'reason', type(e).__name__)}: {e}")
            raise
        served = sum(len(w) for w in rollout.waves)
        emit(f"fleet: {served} host{'s' if served > 1 else ''} serve {target.release}")

    def wait(self, rollout: Rollout, wave: list[str], deadline: float, emit, baking: bool = False) -> None:
        """Until every host of ``wave`` serves the target healthy (or, baking,
        until ``deadline`` passes with none failing). A host that fails the
        release (its smoke check, its gate) rolls the fleet back; one that
        leaves or cannot take part (its failure is its environment's) is
        waited for until ``deadline``, then gone on without: it converges
        on the fleet's release when it can."""
        release, back = rollout.target.release, rollout.back
        pending, gone, hindered = set(wave), set(), {}
        while True:
            if not self.fleet.leading.is_set():
                raise RetryableError(f"{self.fleet.host} lost the fleet's lease mid-rollout", "LeaderLost")
            self.fleet.reported.clear()  # (before the read: a report put after it wakes the wait below)
            reports = self.fleet.hosts()
            for host in sorted(pending):
                report = reports.get(host, HostReport(error="its report is not in etcd yet")
                                     if host == self.fleet.host else None)
                state = condition(report, release)
                if state == "Missing":
                    if host not in gone:
                        gone.add(host)
                        emit(f"  {host} left the fleet (its lease ran out): not waited for")
                    continue
                if state == "Failed":
                    raise RolloutError(f"wave {rollout.wave}: {host} could not serve {release} "
                                       f"({report.failed.reason}); the whole fleet goes back to {back}",
                                       "FleetGateFailed")
                healthy = state == "Synced" and report.health != "Down"
                if baking and not healthy and host != self.fleet.host:
                    raise RolloutError(f"wave {rollout.wave}: {host} stopped serving {release} healthy while it "
                                       f"baked ({report.health}); the whole fleet goes back to {back}",
                                       "FleetGateFailed")
                if healthy and not baking:
                    pending.discard(host)
                    emit(f"  {host} serves {release}, healthy")
                elif report.failed and report.failed.release == release:
                    hindered[host] = report.failed.reason
            if time.monotonic() >= deadline:
                if baking:
                    return
                stuck = pending - gone - set(hindered)
                if stuck:
                    raise RolloutError(f"wave {rollout.wave}: {', '.join(sorted(stuck))} did not serve {release} "
                                       f"within {self.settings.timeout:g}s; the whole fleet goes back to {back}",
                                       "FleetTimeout")
                for host in sorted(pending - gone):
                    emit(f"  {host} could not take part ({hindered[host]}, not the release's fault): going on "
                         "without it; it converges on the fleet's release when it can")
                return
            if not baking and pending <= gone:
                return
            self.fleet.reported.wait(min(LOOK_S, max(0.0, deadline - time.monotonic())))

    def end(self, rollout: Rollout, reason: str) -> None:
        """End a rollout ``RolledBack``: every host goes back to its previous
        release. Best effort: if etcd is unreachable the rollout stays
        ``Progressing``, and the leader (this one or the next) ends it
        when it can (:meth:`abandon`)."""
        rollout.state, rollout.reason = "RolledBack", reason
        try:
            self.fleet.put_rollout(rollout)
        except RetryableError:
            pass

    def unfinished(self) -> Rollout | None:
        """A rollout still ``Progressing`` while no deploy of this leader runs
        it: its leader was lost, or could not end it. None for a key that
        holds no rollout: nothing to end, the next rollout replaces it."""
        try:
            rollout = self.fleet.rollout()
        except StalledError:
            return None
        return rollout if rollout and rollout.state == "Progressing" else None
