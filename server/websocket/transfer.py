"""Moving connections between workers of one server.

Each worker with a hub owns two Linux abstract-namespace Unix sockets, named
from the state directory and its pid (no files to clean up, no path-length
limit; server/contract/layout.py's tag): ``.move``, a datagram socket that receives connections (descriptors
by SCM_RIGHTS, with their sessions as JSON) and acknowledgements of batches
it sent, and ``.bus``, a stream socket for publications
(server/websocket/bus.py).

Any local process can reach an abstract socket, so both take only what a
sibling sends: a process of this worker's uid that the master made a report
for (only the master can make files in ``run/workers``), as the kernel
reports it (SCM_CREDENTIALS on ``.move``, SO_PEERCRED on ``.bus``), never as
the message says. (Workers cannot see each other in /proc: each is hidden
from the others, hidepid=2 and not dumpable.)
"""
from __future__ import annotations

import json
import os
import socket
import struct
from ..contract import report
from ..contract.layout import Layout

MAX_FDS = 200  # below the kernel's SCM_MAX_FD (253) per message
SEND_TIMEOUT = 2.0
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def address(layout: Layout, pid: int, kind: str) -> str:
    return f"\0hotplate-{layout.tag}-{pid}.{kind}"


def bind(layout: Layout) -> socket.socket:
    """The socket on which this worker receives connections."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # every datagram says who sent it
    sock.bind(address(layout, os.getpid(), "move"))
    sock.setblocking(False)
    return sock


def is_sibling(layout: Layout, pid: int, uid: int) -> bool:
    """Whether ``pid`` is another worker of this worker's master, running as
    this worker's user."""
    return uid == os.getuid() and pid != os.getpid() and report.is_worker(layout.workers, pid)


def peer_of(sock: socket.socket) -> tuple[int, int]:
    """The pid and uid of the process at the other end of a connected socket."""
    pid, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid


def targets(layout: Layout, release: str) -> list[int]:
    """Workers that can take connections: accepting, with a hub, on
    ``release`` if any is, else on any release."""
    reports = report.read_reports(layout.workers)
    able = [r for pid, r in reports.items()
            if pid != os.getpid() and r.hub and not r.retiring]
    newest = [r.pid for r in able if r.release == release]
    return sorted(newest or [r.pid for r in able])


def send(layout: Layout, pid: int, message: dict, fds: list[int] = ()) -> None:
    """Send one message (a batch of connections with their descriptors, or
    an acknowledgement) to worker ``pid``.

    :raises OSError: when the worker is gone or does not take it in time.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.settimeout(SEND_TIMEOUT)
        sock.connect(address(layout, pid, "move"))  # send_fds takes no address
        socket.send_fds(sock, [json.dumps(message).encode()], list(fds))
    finally:
        sock.close()


def receive(sock: socket.socket, layout: Layout) -> tuple[dict, list[int]] | None:
    """The next message on this worker's socket, or None."""
    try:
        payload, ancillary, flags, _ = sock.recvmsg(
            8 << 20, socket.CMSG_SPACE(MAX_FDS * 4) + socket.CMSG_SPACE(_UCRED.size))
    except BlockingIOError:
        return None
    fds: list[int] = []
    sender = (0, -1)
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += memoryview(data).cast("i", (len(data) // 4,)).tolist()
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            sender = _UCRED.unpack(data)[:2]
    why = ("arrived truncated" if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC)
           else None if is_sibling(layout, *sender) else f"came from pid {sender[0]}, which is not a worker of this server")
    if why:
        for fd in fds:
            os.close(fd)
        raise OSError(f"a message on the connection-move socket {why}; it was dropped")
    return json.loads(payload), fds
