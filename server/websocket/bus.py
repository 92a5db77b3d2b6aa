"""Publications between the workers of one server.

Every worker listens on its ``.bus`` socket; a worker that publishes writes
the message once to each other worker, over one stream connection per peer,
so messages from one publisher arrive in the order they were published.
Each carries its publisher (host id and pid: websocket/fleet.py) and a sequence number, which let a
connection that moved between workers get every publication once (see
:meth:`server.websocket.hub.Hub.deliver`).
Peers are the workers with a hub in the run directory's reports, re-read
when that directory changes.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from ..contract import report
from ..contract.layout import Layout
from .transfer import address, is_sibling, peer_of

log = logging.getLogger("hotplate")
_HEAD = struct.Struct("<dQQIHB")  # publish time, publisher, sequence, data length, topic length, type


def frame(at: float, origin: int, seq: int, topic: bytes, kind: int, data: bytes) -> bytes:
    return _HEAD.pack(at, origin, seq, len(data), len(topic), kind) + topic + data


def parse(message: bytes) -> tuple[float, int, int, str, int, bytes]:
    """One whole frame: (at, publisher, seq, topic, type, data)."""
    at, origin, seq, size, tsize, kind = _HEAD.unpack_from(message)
    start = _HEAD.size
    return at, origin, seq, message[start:start + tsize].decode(), kind, message[start + tsize:start + tsize + size]


class Reader(asyncio.Protocol):
    """One peer's stream of publications into this worker."""

    def __init__(self, deliver, layout: Layout):
        self.deliver, self.layout = deliver, layout
        self.buf = bytearray()

    def connection_made(self, transport) -> None:
        """Hang up on anything but a worker of this server (see transfer.py)."""
        pid, uid = peer_of(transport.get_extra_info("socket"))
        if not is_sibling(self.layout, pid, uid):
            log.warning("bus: refused a connection from pid %d (uid %d), which is not a worker of this server",
                        pid, uid)
            transport.abort()  # before the transport starts reading: nothing it sent is read

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while len(buf) - pos >= _HEAD.size:
            at, origin, seq, size, tsize, kind = _HEAD.unpack_from(buf, pos)
            end = pos + _HEAD.size + tsize + size
            if len(buf) < end:
                break
            start = pos + _HEAD.size
            self.deliver(at, origin, seq, bytes(buf[start:start + tsize]).decode(), kind,
                         bytes(buf[start + tsize:end]))
            pos = end
        del buf[:pos]


class Link(asyncio.Protocol):
    """This worker's stream to one peer; frames written before it connects wait."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.waiting: list[bytes] = []
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.writelines(self.waiting)
        self.waiting = []

    def connection_lost(self, exc) -> None:
        self.lost = True

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
        else:
            self.waiting.append(data)


class Bus:
    def __init__(self, loop: asyncio.AbstractEventLoop, layout: Layout, deliver):
        self.loop = loop
        self.layout = layout
        self.reports = layout.workers
        self.deliver = deliver
        self.links: dict[int, Link] = {}
        self.peers: list[int] = []
        self.stamp = None
        self.booting = False
        self.server = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(address(self.layout, os.getpid(), "bus"))
        self.server = await self.loop.create_unix_server(lambda: Reader(self.deliver, self.layout), sock=sock)

    def send(self, at: float, origin: int, seq: int, topic: str, kind: int, data: bytes) -> None:
        message = frame(at, origin, seq, topic.encode(), kind, data)
        for pid in self.current_peers():
            link = self.links.get(pid)
            if link is None or link.lost:
                link = self.links[pid] = Link()
                self.loop.create_task(self.connect(pid, link))
            link.write(message)

    def current_peers(self) -> list[int]:
        """The workers with a hub, read again when the directory changes, and
        while a worker there has not reported yet (the master makes its files
        before it writes them)."""
        try:
            stamp = self.reports.stat().st_mtime_ns
        except OSError:
            return []
        if stamp != self.stamp or self.booting:
            self.stamp = stamp
            reports = report.read_reports(self.reports)
            self.booting = len(reports) < len(report.worker_pids(self.reports))
            self.peers = [pid for pid, r in reports.items() if pid != os.getpid() and r.hub]
            for pid in set(self.links) - set(self.peers):
                link = self.links.pop(pid)
                if link.transport:
                    link.transport.close()
        return self.peers

    async def connect(self, pid: int, link: Link) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await self.loop.sock_connect(sock, address(self.layout, pid, "bus"))
            await self.loop.create_unix_connection(lambda: link, sock=sock)
        except OSError as e:
            sock.close()
            link.lost = True
            log.debug("bus: worker %d unreachable (%s); its subscribers miss %d messages", pid, e,
                      len(link.waiting))
