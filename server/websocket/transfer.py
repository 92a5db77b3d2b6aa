"""Moving connections between workers of one server.

Each worker with a hub owns two Linux abstract-namespace Unix sockets, named
from the run directory and its pid (no files to clean up, no path-length
limit): ``.move``, a datagram socket that receives connections (descriptors
by SCM_RIGHTS, with their sessions as JSON) and acknowledgements of batches
it sent, and ``.bus``, a stream socket for publications
(server/websocket/bus.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

from .. import report

MAX_FDS = 200  # below the kernel's SCM_MAX_FD (253) per message
SEND_TIMEOUT = 2.0


def address(run_dir: Path, pid: int, kind: str) -> str:
    tag = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
    return f"\0hotplate-{tag}-{pid}.{kind}"


def bind(run_dir: Path) -> socket.socket:
    """The socket on which this worker receives connections."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address(run_dir, os.getpid(), "move"))
    sock.setblocking(False)
    return sock


def targets(run_dir: Path, release: str) -> list[int]:
    """Workers that can take connections: accepting, with a hub, on
    ``release`` if any is, else on any release."""
    reports = report.read_reports(Path(run_dir) / "workers")
    able = [r for pid, r in reports.items()
            if pid != os.getpid() and r.hub and not r.retiring]
    newest = [r.pid for r in able if r.release == release]
    return sorted(newest or [r.pid for r in able])


def send(run_dir: Path, pid: int, message: dict, fds: list[int] = ()) -> None:
    """Send one message (a batch of connections with their descriptors, or
    an acknowledgement) to worker ``pid``.

    :raises OSError: when the worker is gone or does not take it in time.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.settimeout(SEND_TIMEOUT)
        sock.connect(address(run_dir, pid, "move"))  # send_fds takes no address
        socket.send_fds(sock, [json.dumps(message).encode()], list(fds))
    finally:
        sock.close()


def receive(sock: socket.socket) -> tuple[dict, list[int]] | None:
    """The next message on this worker's socket, or None."""
    try:
        payload, fds, flags, _ = socket.recv_fds(sock, 8 << 20, MAX_FDS)
    except BlockingIOError:
        return None
    if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
        for fd in fds:
            os.close(fd)
        raise OSError("a batch of moved connections arrived truncated; they were closed")
    return json.loads(payload), fds
