"""The controller's line to the gunicorn master: what it asks, and how.

A Unix socket in the run directory (:attr:`Layout.master_socket`: root's
directory, the socket 0600), one request per connection, each message a
line of JSON. The master's main loop carries every request out, between
its own rounds (server/gunicorn_app.py), so nothing races its bookkeeping:

- ``{"op": "workers"}``: ``{"workers": [pid, ...]}``, oldest first.
- ``{"op": "spawn", "n": N}``: N new workers, forked at once whatever is
  still draining: ``{"before": [...]}``, the workers there were before
  them (answered once forked: on two cores, forks side by side with the
  controller's work only slow it).
- ``{"op": "hold", "n": N}``: the same, but *held*: each waits, in its
  cgroup, for the word before it resolves ``current`` and loads it (a
  roll's workers forked while the controller still builds).
- ``{"op": "go"}``: the held workers load ``current`` now, and serve:
  ``{"going": [...]}``. ``{"op": "cancel"}``: they exit, having loaded
  nothing: ``{"cancelled": [...]}``.
- ``{"op": "retire", "keep": [pid, ...]}``: every serving worker but
  those stops accepting and finishes its requests: ``{"retiring": [...]}``.
- ``{"op": "check", "state": ROOT, "timeout": S}`` with the write end of
  a pipe (SCM_RIGHTS): a smoke check forked from the master, which has the
  runtime loaded already (server/smoke.py), ahead of its release: it joins
  its cgroup while the controller still builds. The master forks a keeper
  that forks the check and answers ``{"pid": P}``; the controller sends
  ``{"args": [...]}`` once the release is assembled (or closes the
  connection: cancelled); the keeper answers ``{"exit": CODE}`` once the
  check is gone (``"timeout": true`` if it ran past S seconds). Only the
  keeper writes this connection; the check's answer, written by a process
  that ran module code, comes through the pipe and is read as untrusted
  bytes.

Why not gunicorn's own control socket: it stops and restarts its server
thread around every fork (5 ms a worker, and refused connections
meanwhile), and it has no way to fork anything but a worker.
"""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

#: The longest request or answer line.
MAX_LINE = 64 * 1024


class Unreachable(OSError):
    """No master answers on the socket (none runs, or it is stopped), or
    none that does what was asked: the caller does without it."""


def send(sock: socket.socket, message: dict, fds: tuple[int, ...] = ()) -> None:
    data = json.dumps(message).encode() + b"\n"
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def receive(sock: socket.socket, buffer: bytearray, max_fds: int = 0) -> tuple[dict | None, list[int]]:
    """The next line's message (None at the end of the connection) and the
    descriptors that came with it. ``buffer`` keeps what follows the line."""
    fds: list[int] = []
    while b"\n" not in buffer:
        if len(buffer) > MAX_LINE:
            raise ValueError(f"a line longer than {MAX_LINE} bytes")
        if max_fds:
            data, got, _, _ = socket.recv_fds(sock, MAX_LINE, max_fds)
            fds += got
        else:
            data = sock.recv(MAX_LINE)
        if not data:
            return None, fds
        buffer += data
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("a message is a JSON object")
    return message, fds


class Master:
    """The controller's side: each call one connection to the master.

    :param path: the master's socket (:attr:`Layout.master_socket`).
    :param timeout: seconds to wait for an answer: a master that does not
        run its loop (stopped, or busy) makes the call fail, not hang.
    """

    def __init__(self, path: Path, timeout: float = 5.0):
        self.path = path
        self.timeout = timeout

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError as e:
            sock.close()
            raise Unreachable(e.errno, f"no gunicorn master answers at {self.path}: {e.strerror}") from None
        return sock

    def ask(self, request: dict) -> dict:
        with self.connect() as sock:
            try:
                send(sock, request)
                answer, _ = receive(sock, bytearray())
            except (OSError, ValueError) as e:
                raise Unreachable(f"the gunicorn master did not answer {request['op']!r}: {e}") from None
        if answer is None:
            raise Unreachable(f"the gunicorn master closed the connection without answering {request['op']!r}")
        if "error" in answer:  # (a master of another version, adopted, that does not know the request)
            raise Unreachable(f"the gunicorn master refused {request['op']!r}: {answer['error']}")
        return answer

    def workers(self) -> list[int]:
        """The workers the master counts, oldest first (draining ones included)."""
        return self.ask({"op": "workers"})["workers"]

    def spawn(self, n: int, held: bool = False) -> list[int]:
        """Fork ``n`` new workers now, held or not: the workers before them."""
        return self.ask({"op": "hold" if held else "spawn", "n": n})["before"]

    def go(self) -> list[int]:
        """The held workers load ``current`` and serve: those that do."""
        return self.ask({"op": "go"})["going"]

    def cancel(self) -> list[int]:
        """The held workers exit unloaded."""
        return self.ask({"op": "cancel"})["cancelled"]

    def retire(self, keep: list[int]) -> list[int]:
        """Retire every serving worker but ``keep``: those now retiring."""
        return self.ask({"op": "retire", "keep": keep})["retiring"]

    def check(self, state: Path, answer_fd: int, timeout: float) -> Keeper:
        """Fork a smoke check from the master, ahead of its arguments
        (:meth:`Keeper.go`), its answer written to ``answer_fd``, killed
        ``timeout`` seconds after it goes."""
        sock = self.connect()
        keeper = Keeper(sock, 0, bytearray())
        try:
            send(sock, {"op": "check", "state": str(state), "timeout": timeout}, (answer_fd,))
            started = keeper.next()
            if started is None or not isinstance(started.get("pid"), int):
                raise ValueError(f"it answered {started}")
        except (OSError, ValueError) as e:
            sock.close()
            raise Unreachable(f"the gunicorn master did not start the smoke check: {e}") from None
        keeper.pid = started["pid"]
        return keeper


@dataclass
class Keeper:
    """The controller's end of a smoke check's keeper (the master's child
    that forked the check and waits for it): its connection, the check's
    pid, and what was read past the last line."""

    sock: socket.socket
    pid: int
    buffer: bytearray

    def go(self, args: list[str]) -> None:
        """The check's arguments: it runs now."""
        send(self.sock, {"args": args})

    def next(self) -> dict | None:
        """The keeper's next message (None: it is gone)."""
        return receive(self.sock, self.buffer)[0]
