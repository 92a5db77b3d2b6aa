"""Wake the loop the moment a push moves the hosted branch.

git moves a ref by renaming ``refs/heads/BRANCH.lock`` onto it; only then
does it start the post-receive hook, which asks for the deploy, and a bare
interpreter takes some 40 ms to start (issue 23). Watching the ref's
directory (inotify) begins the deploy as the ref moves; the hook then
follows a deploy that is already running (controller/push.py). The hook
still wakes the loop too: a ref that this watch misses (packed, or an
overflowed event queue) deploys as it did before, only later.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from inotify_simple import INotify, flags


def watch(ref: Path, wake: Callable[[], None], stopping: threading.Event) -> None:
    """Call ``wake`` from a thread of its own each time the file ``ref`` is
    put in place, until ``stopping`` is set."""
    ref.parent.mkdir(parents=True, exist_ok=True)  # (a branch not pushed yet, e.g. release/v1)
    notify = INotify()
    notify.add_watch(ref.parent, flags.MOVED_TO | flags.CREATE)

    def run() -> None:
        with notify:
            while not stopping.is_set():
                if any(event.name == ref.name for event in notify.read(timeout=1000)):
                    wake()

    threading.Thread(target=run, name="refwatch", daemon=True).start()
