"""What the state directory keeps: the newest releases (never the live, the
previous or the pinned one), the build cache within its size, and the
facts about past releases that rollback reads."""
from __future__ import annotations

import shutil

from .build import prune_cache
from .record import History
from .state import State


def prune(state: State, history: History, keep_releases: int, cache_bytes: int) -> None:
    """Keep the newest ``keep_releases`` releases, never the live, previous
    or pinned one, and the build cache within ``cache_bytes``, never
    dropping an object that a kept release loads."""
    keep = {state.live_release(), previous_release(state, history), state.pinned()}
    releases = sorted((p for p in state.releases.iterdir() if not p.name.startswith(".")),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    for path in releases[keep_releases:]:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
    state.prune_commits()
    kept = (state.release(path.name) for path in state.releases.iterdir())
    kept_objects = {m.key for spec in kept if spec for m in spec.modules}
    prune_cache(state.cache, kept_objects, cache_bytes)


def commit_of(state: State, history: History, release: str) -> str | None:
    """The commit whose deploy last made ``release`` live, else the one it
    was built from (a release whose deploy was not recorded, or failed)."""
    return next((commit for rel, commit in history.live_releases() if rel == release and commit), None) or \
        state.build_info(release).get("commit")


def previous_release(state: State, history: History) -> str | None:
    """The release that was live before the current one."""
    live = state.live_release()
    return next((rel for rel, _ in history.live_releases() if rel != live), None)
