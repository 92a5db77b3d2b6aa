"""``--publish``: the release that goes live on this host (through its
gate) is tagged ``live`` in a registry, or the environment's own tag
(``--publish REGISTRY/REPO:staging``), where followers (``--follow``) pull
it (controller/registry.py); ``promote`` moves another environment's tag."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from hotplate.server.contract.fleet import Target

from .errors import HotplateError
from .registry import Registry, push
from .state import State

log = logging.getLogger("hotplate.controller")
#: Seconds between tries to publish a live release the registry refused.
PUBLISH_RETRY_S = 2.0


class Publisher:
    """Tags what goes live, once per release.

    :param url: the registry repository; None: this host publishes nothing.
    :param source: what this host deploys from now (the commit's message and author).
    :param allowed: whether this host may publish now (in a fleet, only its leader).
    """

    def __init__(self, state: State, url: str | None, source: Callable, allowed: Callable[[], bool]):
        self.state, self.url, self.source, self.allowed = state, url, source, allowed
        self.published: str | None = None  # the release last tagged live
        self.lock = threading.Lock()  # live read and tagged in one go: a later release is never overwritten

    def due(self) -> bool:
        """Whether this host tags what goes live now."""
        return bool(self.url) and self.allowed()

    def behind(self) -> bool:
        """Whether live is not tagged yet (the registry was down when it went live)."""
        return self.due() and self.state.live_release() not in (None, self.published)

    def publish(self) -> str:
        """Tag the live release; the line that says how it went. Never
        raises: a registry that fails costs the followers this release until
        it is back (the loop tries again every PUBLISH_RETRY_S), never this
        host's deploy."""
        with self.lock:
            release, commit = self.state.live_release(), self.state.live_commit()
            try:
                spec = self.state.release(release)
                info = self.info(commit)
                target = Target(release, commit, info.get("message", ""), info.get("author", ""),
                                spec.config if spec else None)
                tag = Registry(self.url).tag
                sent = push(self.state.release_path(release), self.url, tags=(tag, commit) if commit else (tag,),
                            annotations=target.annotations())
                self.published = release
                return f"published {release} to {self.url} as {tag} ({sent.moved} new blobs)"
            except Exception as e:
                log.warning("publishing %s to %s failed", release, self.url, exc_info=not isinstance(e, HotplateError))
                return (f"publishing {release} to {self.url} FAILED ({e}); followers stay on their release until it "
                        f"is published (tried again every {PUBLISH_RETRY_S:g} s)")

    def info(self, commit: str | None) -> dict:
        """The commit's message and author, if this host's source has it (a
        new leader may serve a commit its own mirror has not fetched yet):
        they annotate the release, and never keep it from being published."""
        source = self.source()
        if not commit or source is None:
            return {}
        try:
            return source.commit_info(commit)
        except Exception as e:
            log.info("publishing: %s is not in this host's source yet (%s); published without its message", commit, e)
            return {}
