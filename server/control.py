"""The master's end of its line to the controller (server/contract/control.py).

A thread accepts each connection and reads its request; the arbiter's main
loop carries it out (server/gunicorn_app.py), so that forks happen on the
main thread and the worker table changes in one place only. Every process
the master forks closes the listening socket first (:meth:`Listener.close`):
module code must never be able to answer in the master's name.
"""
from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from pathlib import Path
from typing import Callable

from .contract.control import receive, send

log = logging.getLogger("hotplate")


class Request:
    """One request, its connection (answered and closed by whoever carries
    it out) and the descriptors that came with it."""

    def __init__(self, message: dict, conn: socket.socket, fds: list[int]):
        self.message, self.conn, self.fds = message, conn, fds

    def answer(self, message: dict) -> None:
        try:
            send(self.conn, message)
        except OSError as e:  # the controller gave up meanwhile
            log.warning("could not answer the controller's %r: %s", self.message.get("op"), e)

    def close(self) -> None:
        self.conn.close()
        for fd in self.fds:
            os.close(fd)
        self.fds = []


class Listener:
    """Accepts requests on ``path`` (0600) and hands them to the main loop.

    :param wake: wakes the main loop (the arbiter's ``wakeup``).
    """

    def __init__(self, path: Path, wake: Callable[[], None]):
        self.wake = wake
        self.pending: queue.SimpleQueue[Request] = queue.SimpleQueue()
        path.unlink(missing_ok=True)  # (a killed master's)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(str(path))
        finally:
            os.umask(old)
        self.sock.listen(16)
        threading.Thread(target=self.accept, daemon=True, name="control").start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed: the master stops
                return
            conn.settimeout(5)
            try:
                message, fds = receive(conn, bytearray(), max_fds=1)
            except (OSError, ValueError) as e:
                log.warning("control: an unreadable request (%s)", e)
                conn.close()
                continue
            if message is None:
                conn.close()
                continue
            self.pending.put(Request(message, conn, fds))
            self.wake()

    def requests(self) -> list[Request]:
        """The requests waiting for the main loop."""
        out = []
        while True:
            try:
                out.append(self.pending.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        """In a forked child: let go of the master's socket."""
        self.sock.close()
