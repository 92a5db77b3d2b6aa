"""A fleet of hosts on etcd (issue 11): who leads, what each host serves,
and the rollout in progress.

Every host of a fleet (``hotplate up ... --fleet etcd://HOST:PORT``) keeps a
lease of ``TTL_S`` seconds alive and, under its fleet's prefix
``/hotplate/<name>/``, these keys:

``leader``
    The candidate that builds, publishes and rolls out, bound to its lease.
    A candidate (a host with a SOURCE) creates it when it is free: a leader
    that dies stops renewing its lease, and within its TTL another takes
    it. A host that cannot reach etcd never builds on its own.
``hosts/<host>``
    Each host's report: the release it serves, its health, its last failed
    deploy (with its outcome: only ``failed`` and ``rolled_back`` are the
    release's fault). Bound to the host's lease, so a host that is gone
    drops out within the TTL.
``members/<host>``
    When each host that ever joined last reported, not bound to a lease: a
    host whose report is gone is ``Missing`` since then, never forgotten
    (``etcdctl del`` the key to forget one for good).
``rollout``
    The rollout: the release rolling out and the one
    before it, its waves, how far it got and how it ended. Only the
    leader writes it, in a transaction that checks it still holds
    ``leader``; every other host deploys what it names for that host.

The records themselves (typed, versioned, read as untrusted) are
server/contract/fleet.py's.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable
from urllib.parse import urlparse

from hotplate.server.contract.fleet import HostReport, Member, Rollout, Unreadable

from .errors import RetryableError, StalledError
from .registry import RegistrySource

log = logging.getLogger("hotplate.controller")
TTL_S = 5


def condition(report: HostReport | None, want: str | None) -> str:
    """One host against the release the rollout names for it: the one
    derivation that status, the dashboard and the waves read.

    ``Missing`` (no report: its lease ran out), ``Unreadable`` (a key that
    holds no report), ``Progressing`` (deploying), ``Failed`` (its smoke
    check or gate failed on ``want``), ``Synced``, or ``Stale`` (serves
    something else, or could not take part: its last failure was not the
    release's)."""
    if report is None:
        return "Missing"
    if report.error is not None:
        return "Unreadable"
    if report.deploying is not None:
        return "Progressing"
    if want and report.failed and report.failed.release == want and report.failed.blames():
        return "Failed"
    return "Synced" if report.release == want else "Stale"


class Fleet:
    """This host's membership of a fleet: its lease, its report, and (for a
    candidate) the leader's key.

    :param report: called for this host's report.
    :param on_change: called with True or False when this host starts or stops leading.
    :param on_rollout: called when the rollout key changes (etcd's watch), and
        after each reconnect of the watch (a change may have been missed):
        a follower acts on a new wave at once, not at its next poll.
    """

    def __init__(self, url: str, name: str, host: str, candidate: bool, report: Callable[[], HostReport],
                 on_change: Callable[[bool], None] = lambda leading: None,
                 on_rollout: Callable[[], None] = lambda: None):
        parsed = urlparse(url)
        if parsed.scheme != "etcd" or not parsed.hostname:
            raise StalledError(f"{url}: the fleet's etcd is etcd://HOST:PORT", "BadFleet")
        self.url = url
        from etcd3gw.client import Etcd3Client  # (only a fleet's hosts load etcd3gw and requests: 8 MB)

        self.client = Etcd3Client(parsed.hostname, parsed.port or 2379, timeout=2)
        self.prefix = f"/hotplate/{name}/"
        self.host, self.candidate = host, candidate
        self.report, self.on_change, self.on_rollout = report, on_change, on_rollout
        self.leading = threading.Event()
        self.lease = None
        self.contact: float | None = None  # time.time() of the last answer from etcd
        self.lock = threading.Lock()  # one beat at a time: the keeper's, or a report after a deploy
        self.stopping = threading.Event()
        self.cancel_watch: Callable[[], None] | None = None
        self.reported = threading.Event()  # set by the watch when a host's report changes (the leader's waves)
        threading.Thread(target=self.keep, name="fleet", daemon=True).start()
        threading.Thread(target=self.watch, name="fleet-watch", daemon=True).start()

    # -- membership ------------------------------------------------------

    def keep(self) -> None:
        while not self.stopping.is_set():
            was, now = self.leading.is_set(), self.beat()
            if now != was:
                (self.leading.set if now else self.leading.clear)()
                log.info("fleet: %s %s", self.host, "leads: it builds, publishes and rolls out" if now else
                         "follows the fleet's rollout")
                self.on_change(now)
            self.stopping.wait(TTL_S / 3)

    def beat(self) -> bool:
        """Renew the lease, put the report, hold or take ``leader``; whether
        this host leads. Any error from etcd: it does not."""
        with self.lock:
            try:
                if self.lease is None or self.lease.refresh() <= 0:
                    self.lease = self.client.lease(TTL_S)
                self.put_report()
                if not self.candidate:
                    return False
                return self.client.create(self.prefix + "leader", self.host, lease=self.lease) or \
                    self.holder() == self.host
            except Exception as e:  # etcd unreachable: keep serving, never lead
                log.debug("fleet: etcd: %s", e)
                self.lease = None
                return False

    def watch(self) -> None:
        """Wake this host whenever the rollout changes, and a leader's waves
        whenever a host reports; reconnect (and wake once, to resync)
        whenever the watch breaks."""
        rollout, hosts = (self.prefix + "rollout").encode(), (self.prefix + "hosts/").encode()
        while not self.stopping.is_set():
            try:
                events, self.cancel_watch = self.client.watch_prefix(self.prefix)
                self.on_rollout()
                self.reported.set()
                for event in events:
                    if self.stopping.is_set():
                        break
                    key = event.get("kv", {}).get("key", b"")
                    if key == rollout:
                        self.on_rollout()
                    elif key.startswith(hosts):
                        self.reported.set()
            except Exception as e:  # etcd gone: the polls go on meanwhile
                log.debug("fleet: watch: %s", e)
            self.stopping.wait(1.0)

    def put_report(self) -> None:
        now = time.time()
        self.client.put(self.prefix + "hosts/" + self.host, self.report().dump(), lease=self.lease)
        self.client.put(self.prefix + "members/" + self.host, Member(now).dump())
        self.contact = now

    def tell(self) -> None:
        """Put this host's report now (after a deploy), not at the next beat."""
        if self.lease is not None:
            with self.lock:
                try:
                    self.put_report()
                except Exception as e:
                    log.debug("fleet: etcd: %s", e)

    def connected(self) -> bool:
        return self.contact is not None and time.time() - self.contact < TTL_S

    def holder(self) -> str | None:
        values = self.client.get(self.prefix + "leader")
        return values[0].decode() if values else None

    def stop(self) -> None:
        self.stopping.set()
        if self.cancel_watch is not None:
            try:
                self.cancel_watch()
            except Exception:
                pass
        if self.lease is not None:
            try:
                self.lease.revoke()  # the next leader need not wait for the TTL
            except Exception:
                pass

    # -- what the fleet holds -----------------------------------------------

    def call(self, what: str, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except Exception as e:
            raise RetryableError(f"the fleet's etcd {self.url} did not answer ({what}): {e}", "EtcdUnreachable") \
                from None

    def hosts(self) -> dict[str, HostReport]:
        """The reports of the hosts alive now, by host; a key that holds no
        report (anyone with access to etcd can write there) gives one that
        says why (``error``)."""
        rows = self.call("hosts", self.client.get_prefix, self.prefix + "hosts/")
        return {meta["key"].decode().rpartition("/")[2]: HostReport.load(value) for value, meta in rows}

    def members(self) -> dict[str, float]:
        """Every host that ever joined, with when it last reported."""
        rows = self.call("members", self.client.get_prefix, self.prefix + "members/")
        return {meta["key"].decode().rpartition("/")[2]: Member.load(value).seen for value, meta in rows}

    def rollout(self) -> Rollout | None:
        """The rollout in etcd, or None.

        :raises StalledError: ``BadRollout`` if the key holds something else."""
        values = self.call("rollout", self.client.get, self.prefix + "rollout")
        if not values:
            return None
        try:
            return Rollout.load(values[0])
        except Unreadable as e:
            raise StalledError(f"{self.prefix}rollout in {self.url} is not a rollout ({e}); the leader's next "
                               "deploy replaces it, and until then every host keeps what it serves",
                               "BadRollout") from None

    def put_rollout(self, rollout: Rollout) -> None:
        """Write the rollout if this host still holds ``leader`` (two hosts
        that both believe they lead, for a moment, never both write)."""
        from etcd3gw.utils import _encode

        key = _encode(self.prefix + "leader")
        result = self.call("write the rollout", self.client.transaction, {
            "compare": [{"key": key, "result": "EQUAL", "target": "VALUE", "value": _encode(self.host)}],
            "success": [{"request_put": {"key": _encode(self.prefix + "rollout"),
                                         "value": _encode(rollout.dump())}}],
            "failure": []})
        if not result.get("succeeded"):
            self.leading.clear()
            raise RetryableError(f"{self.host} no longer leads the fleet (its lease ran out); the new leader "
                                 "ends this rollout", "LeaderLost")


class FleetSource(RegistrySource):
    """What a host of a fleet deploys while it does not lead: the release
    the fleet's rollout names for this host, pulled from the registry."""

    def __init__(self, url: str, fleet: Fleet):
        super().__init__(url)
        self.fleet = fleet

    def fetch(self) -> None:
        """Also notes ``upcoming``: the release of a rollout that has not
        reached this host's wave yet, which the host pulls and smoke-checks
        ahead (the reconcile loop), so that its wave costs no pull."""
        rollout = self.fleet.rollout()
        desired = rollout.desired(self.fleet.host) if rollout else None
        self.live = desired.annotations() if desired else {}
        self.upcoming = rollout.target.release if rollout and rollout.state == "Progressing" and \
            desired is not rollout.target else None
