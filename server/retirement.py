"""Whether a worker is going: one home for it in the worker (issue 22).

A worker is replaced for one of a few reasons: gunicorn's roll or
shutdown (its SIGTERM), its master gone, a handler that crashed or ran past
its deadline (its heap or locks may be corrupt), its memory past the
ceiling, ``max_requests``. Whoever finds a reason asks here
(:meth:`Retirement.request`, from any thread); the worker's loop, once it
stops accepting for good, begins it once (:meth:`Retirement.begin`): the
report file tells the controller, C's core drains, the hub moves its
WebSockets. Every part that asks "is this worker going?" reads
:attr:`Retirement.started` here.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable


class Retirement:
    def __init__(self):
        #: the first reason asked for (None: gunicorn's own, a roll or shutdown)
        self.reason: str | None = None
        #: the worker has stopped accepting for good
        self.started = False
        #: what begin() does, in order (server/worker.py adds them)
        self.steps: list[Callable[[], object]] = []
        self.lock = threading.Lock()

    def request(self, reason: str) -> None:
        """Replace this worker once its requests are done: gunicorn's graceful
        stop, which ends the worker's loop (and so begins the retirement)."""
        with self.lock:
            if self.reason is not None:
                return
            self.reason = reason
        os.kill(os.getpid(), signal.SIGTERM)

    def begin(self) -> None:
        """Once, when the worker stops accepting for good."""
        with self.lock:
            if self.started:
                return
            self.started = True
        for step in self.steps:
            step()
