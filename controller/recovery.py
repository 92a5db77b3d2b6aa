"""What a controller does first after a restart, before its loop: whatever
a killed one left half done is dropped or closed, and ``current`` goes back
to the release that last passed everything if it was left elsewhere."""
from __future__ import annotations

import logging
import shutil

from .rollout import roll

log = logging.getLogger("hotplate.controller")


def recover(c) -> None:
    """Drop half-made releases and checkouts, close interrupted deploys, and
    put ``current`` back on the verified release (else the last that passed
    its gate) unless a rollback pinned it."""
    for staging in c.state.releases.glob(".staging-*"):
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(c.state.sources, ignore_errors=True)
    n = c.history.interrupt_unfinished()
    if n:
        log.warning("%d deploy(s) were interrupted by a controller stop", n)
    verified = c.state.verified()
    good, commit = (verified.release, verified.commit) if verified else \
        next(iter(c.history.live_releases(1)), (None, None))
    if good and c.state.release(good) is not None and c.state.live_release() != good and c.state.pinned() is None:
        log.warning("current was %s (not verified); restoring %s", c.state.live_release(), good)
        c.state.switch(good, commit)
        if c.server.pid is not None:
            roll(c.server, good)
