"""Which host of a fleet builds: the holder of a lease in etcd (issue 11).

Every candidate (``hotplate up SOURCE --fleet etcd://HOST:PORT --publish
REGISTRY/REPO``) tries to create the key ``/hotplate/<repo>/leader`` bound to
a lease of ``TTL_S`` seconds and keeps the lease alive while it runs. The
one that holds it builds the branch tip and publishes what goes live; the
others follow the registry like any ``--follow`` host. A leader that dies
stops renewing its lease: within its TTL another candidate takes the key and
finishes (or rolls back) whatever it finds between the tip and live. A host
that cannot reach etcd follows: it never builds on its own.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from urllib.parse import urlparse

from etcd3gw.client import Etcd3Client

from .errors import StalledError

log = logging.getLogger("hotplate.controller")
TTL_S = 5


class Leadership:
    def __init__(self, url: str, name: str, on_change=None):
        parsed = urlparse(url)
        if parsed.scheme != "etcd" or not parsed.hostname:
            raise StalledError(f"{url}: the fleet's etcd is etcd://HOST:PORT", "BadFleet")
        self.client = Etcd3Client(parsed.hostname, parsed.port or 2379, timeout=2)
        self.key = f"/hotplate/{name}/leader"
        self.me = f"{socket.gethostname()}:{os.getpid()}"
        self.on_change = on_change or (lambda leading: None)
        self.leading = threading.Event()
        self.lease = None
        self.stopping = threading.Event()
        threading.Thread(target=self.keep, name="leadership", daemon=True).start()

    def keep(self) -> None:
        while not self.stopping.is_set():
            was = self.leading.is_set()
            now = self.hold()
            if now != was:
                (self.leading.set if now else self.leading.clear)()
                log.info("fleet: %s %s", self.me, "leads: it builds and publishes" if now else "follows the registry")
                self.on_change(now)
            self.stopping.wait(TTL_S / 3)

    def hold(self) -> bool:
        """Keep the lease alive, or take the key if it is free; False on any error."""
        try:
            if self.lease is not None:
                if self.lease.refresh() > 0 and self.holder() == self.me:
                    return True
                self.lease = None
            lease = self.client.lease(TTL_S)
            if self.client.create(self.key, self.me, lease=lease):
                self.lease = lease
                return True
            lease.revoke()
        except Exception as e:  # etcd unreachable: follow, never build alone
            log.debug("fleet: etcd: %s", e)
            self.lease = None
        return False

    def holder(self) -> str | None:
        values = self.client.get(self.key)
        return values[0].decode() if values else None

    def stop(self) -> None:
        self.stopping.set()
        if self.lease is not None:
            try:
                self.lease.revoke()  # the next leader need not wait for the TTL
            except Exception:
                pass
