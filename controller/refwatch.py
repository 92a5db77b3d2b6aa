"""Wake the loop the moment a push moves the hosted branch.

git moves a ref by renaming ``refs/heads/BRANCH.lock`` onto it; only then
does it start the post-receive hook, which asks for the deploy, and a bare
interpreter takes some 40 ms to start (issue 23). Watching the ref's
directory (inotify) begins the deploy as the ref moves; the hook then
follows a deploy that is already running (controller/push.py). The hook
still wakes the loop too: a ref that this watch misses (packed, or an
overflowed event queue) deploys as it did before, only later.

Earlier still, receive-pack makes the push's quarantine directory
(``objects/tmp_objdir-incoming-*``) as the objects begin to arrive, 10-40 ms
before the ref moves: the moment to hold the workers a deploy will roll
(controller/rollout.py's Ahead).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from inotify_simple import INotify, flags

log = logging.getLogger("hotplate.controller")

#: The prefix of the quarantine directory git's receive-pack makes in ``objects/``.
INCOMING = "tmp_objdir-incoming-"


def watch(repo: Path, ref: str, wake: Callable[[], None], arriving: Callable[[], None],
          stopping: threading.Event) -> None:
    """From a thread of its own until ``stopping`` is set: call ``wake``
    each time the bare ``repo``'s ``ref`` file is put in place, and
    ``arriving`` each time a push's objects begin to arrive."""
    path = repo / ref
    path.parent.mkdir(parents=True, exist_ok=True)  # (a branch not pushed yet, e.g. release/v1)
    notify = INotify()
    refs = notify.add_watch(path.parent, flags.MOVED_TO | flags.CREATE)
    objects = notify.add_watch(repo / "objects", flags.CREATE)

    def run() -> None:
        with notify:
            while not stopping.is_set():
                events = notify.read(timeout=1000)
                if any(e.wd == objects and e.name.startswith(INCOMING) for e in events):
                    try:
                        arriving()
                    except Exception:  # (only a head start: the watch goes on, the deploy does without it)
                        log.exception("getting ready for an arriving push failed")
                if any(e.wd == refs and e.name == path.name for e in events):
                    wake()

    threading.Thread(target=run, name="refwatch", daemon=True).start()
