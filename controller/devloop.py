"""``hotplate dev``'s loop: watch the sources, redeploy on a save, and show
a save that did not go live in the browser.

Only what a build reads triggers one: ``deploy.yaml`` and C sources and
headers; editor swap files, notes and dotfiles do not (watchfiles, inotify).
While the latest save does not go live, every request to the app answers
with why (the deploy's log, gcc's diagnostics included: server/worker.py).
"""
from __future__ import annotations

import logging
from pathlib import Path

import watchfiles

from hotplate.server.contract.layout import write_atomic

from .deploy import TREE, Attempt
from .plan import MANIFEST

SOURCE_SUFFIXES = (".c", ".h")
DEBOUNCE_MS = 20  # a save is usually a burst of events: build once it is over
STEP_MS = 2  # ...that is, once 2 ms pass with no event (the watcher polls this often: dev only, ~0.1% of a core)
WAKE_MS = 100  # the watcher wakes this often with nothing (the first one says it is armed)


class SourceFilter(watchfiles.DefaultFilter):
    """The manifest at the app's root, and C sources and headers outside
    hidden directories and the state directory."""

    def __init__(self, app: Path, state_root: Path):
        super().__init__(ignore_paths=[state_root])
        self.app = app

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        p = Path(path)
        try:
            parts = p.relative_to(self.app).parts
        except ValueError:
            return False
        return (super().__call__(change, path) and not any(part.startswith(".") for part in parts)
                and (p.suffix in SOURCE_SUFFIXES or parts == (MANIFEST,)))


def run(controller, app: Path, errors: Path) -> None:
    """Deploy the tree now and after each save, until the controller stops."""
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # we say what changed ourselves
    watcher = watchfiles.watch(app, watch_filter=SourceFilter(app, controller.state.root), debounce=DEBOUNCE_MS,
                               step=STEP_MS, stop_event=controller.stopping, raise_interrupt=False,
                               yield_on_timeout=True, rust_timeout=WAKE_MS)
    next(watcher, None)  # an empty batch once the watch is armed: no save is missed from here on
    deploy(controller, app, errors)
    for changes in watcher:
        if not changes:
            continue  # a timeout
        names = sorted({str(Path(path).relative_to(app)) for _, path in changes})
        print(f"changed: {', '.join(names)}", flush=True)
        deploy(controller, app, errors)


def deploy(controller, app: Path, errors: Path) -> None:
    """One deploy of the working tree; the error page follows its outcome."""
    d = controller.execute(Attempt("dev", tree=app, meta={"message": "working tree"}), TREE)
    if d.outcome == "succeeded":
        errors.unlink(missing_ok=True)
    else:
        write_atomic(errors, "\n".join(d.lines) + "\n")
