"""One WebSocket connection on a worker's event loop.

The common frame, a whole message in one masked text or binary frame, is
read here (:meth:`Connection.quick_frames`) and the answers are written here
too (:func:`data_frame`): most of the CPU a message cost went to wsproto's
events. Everything else (fragments, control frames, anything malformed) is
parsed by wsproto, but only whole frames are fed to it: wsproto emits
partial frames and keeps decoder state that cannot leave the process, so
bytes of an incomplete frame stay here, in :attr:`Connection.buffer`. At a
message boundary, then, everything wsproto has seen is parsed, and the
connection can move to another worker with just its socket, its session and
that buffer. A connection about to move stops at the first boundary: the
frames after it stay in the buffer, for the new code.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import os
import struct
import time

from wsproto import ConnectionType
from wsproto.connection import Connection as Protocol, ConnectionState
from wsproto.events import CloseConnection, Message, Ping, TextMessage

from ..modules import Socket
from ..contract.report import WS_MESSAGES
from .. import metrics
from . import calls
from .calls import Session

log = logging.getLogger("hotplate")
CLOSE_WAIT = 5.0  # seconds a closing connection waits for the client's close frame
STALL_S = 10.0  # seconds a client may take without reading any of what is queued past ws_send_buffer


def unmask(payload: bytes, mask: bytes) -> bytes:
    """A client frame's payload, its 4-byte mask applied (one big-integer XOR)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def data_frame(kind: int, data: bytes) -> bytes:
    """A whole message as one unmasked server frame (RFC 6455 section 5.2)."""
    op = 0x81 if kind == calls.TEXT else 0x82
    n = len(data)
    if n < 126:
        return bytes((op, n)) + data
    if n < 65536:
        return struct.pack("!BBH", op, 126, n) + data
    return struct.pack("!BBQ", op, 127, n) + data


def frame_header(buf: bytearray, pos: int) -> tuple[int, int] | None:
    """(header length, payload length) of the frame at ``pos``, or None
    until enough of the header has arrived (RFC 6455 section 5.2)."""
    avail = len(buf) - pos
    if avail < 2:
        return None
    b1 = buf[pos + 1]
    length, size = b1 & 0x7F, 2
    if length == 126:
        size = 4
        if avail < size:
            return None
        length = int.from_bytes(buf[pos + 2:pos + 4], "big")
    elif length == 127:
        size = 10
        if avail < size:
            return None
        length = int.from_bytes(buf[pos + 2:pos + 10], "big")
    return size + (4 if b1 & 0x80 else 0), length


class Connection(asyncio.Protocol):
    """A connection's protocol state, serving one :class:`Session` with the
    handlers of one :class:`~server.modules.Socket` route."""

    def __init__(self, hub, route: Socket, session: Session, pending: bytes = b"",
                 actions: list | None = None, paused_at: float | None = None):
        self.hub = hub
        self.route = route
        self.session = session
        self.ws = Protocol(ConnectionType.SERVER)
        self.buffer = bytearray(pending)
        self.actions = actions or []
        self.transport: asyncio.Transport | None = None
        self.in_message = False  # a data frame without FIN was fed to wsproto
        self.message_size = 0
        self.parts: list = []
        self.heard = 0.0
        self.pinged = False
        self.resumed = None  # hp_ws_resume's test of what this client missed (websocket/hub.py)
        self.moving = False
        self.moved = False
        self.ended = False
        self.paused_at = paused_at  # wall-clock time the previous worker stopped reading
        self.stalled: int | None = None  # bytes queued when the transport last paused, while it stays paused
        self.largest = 0  # the largest frame written to it

    # asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=self.hub.config.ws_send_buffer)
        self.heard = self.hub.loop.time()
        self.hub.register(self, moved_in=self.paused_at is not None)
        if self.paused_at is not None:
            self.hub.pauses.append(time.time() - self.paused_at)
            self.paused_at = None
        self.apply(self.actions)
        self.actions = []
        if self.buffer:
            self.data_received(b"")

    def data_received(self, data: bytes) -> None:
        self.heard = self.hub.loop.time()
        self.pinged = False
        buf = self.buffer
        buf += data
        self.quick_frames()
        end, limit, too_big = 0, self.route.spec.max_message, False
        while True:
            header = frame_header(buf, end)
            if header is None:
                break
            size, length = header
            data_frame = buf[end] & 0x0F < 8
            if data_frame and self.message_size + length > limit:
                too_big = True  # known from the header: the payload is never buffered
                break
            if len(buf) - end < size + length:
                break
            if data_frame:
                self.message_size += length
                self.in_message = not buf[end] & 0x80
                if not self.in_message:
                    self.message_size = 0
            end += size + length
            if self.moving and data_frame and not self.in_message:
                break  # the boundary to move at: what follows is for the new code
        if end and not self.ended:
            self.ws.receive_data(bytes(buf[:end]))
            del buf[:end]
            self.process()
        if too_big and not self.ended:
            self.fail(1009, f"message larger than {limit} bytes")
        elif self.moving and not self.in_message:
            self.pause()

    def quick_frames(self) -> None:
        """Dispatch the whole, masked, unfragmented text and binary frames at
        the head of the buffer without wsproto, while it holds no fragment;
        stop at the first other frame (wsproto's), at text that is not UTF-8
        (wsproto closes with 1007), and at a message boundary when moving."""
        buf, pos, limit = self.buffer, 0, self.route.spec.max_message
        while not self.in_message and not self.ended and not self.moving and self.ws.state is ConnectionState.OPEN:
            header = frame_header(buf, pos)
            if header is None:
                break
            size, length = header
            b0 = buf[pos]
            if b0 not in (0x81, 0x82) or not buf[pos + 1] & 0x80 or length > limit or len(buf) - pos < size + length:
                break
            start = pos + size
            payload = unmask(bytes(buf[start:start + length]), bytes(buf[start - 4:start]))
            if b0 == 0x81:
                try:
                    payload.decode()
                except UnicodeDecodeError:
                    break
            pos = start + length
            self.dispatch(calls.MESSAGE, payload, calls.TEXT if b0 == 0x81 else calls.BINARY)
        if pos:
            del buf[:pos]

    def pause_writing(self) -> None:
        """More than ws_send_buffer is queued for the client: one big message
        does that to a client that reads. It is dropped only if it reads
        nothing of it for STALL_S (:meth:`check_reading`), or if what is
        queued grows past ws_send_buffer plus twice its largest message
        (:meth:`write`): never buffered without bound."""
        self.stalled = self.transport.get_write_buffer_size()
        self.hub.loop.call_later(STALL_S, self.check_reading)

    def resume_writing(self) -> None:
        self.stalled = None

    def check_reading(self) -> None:
        if self.stalled is None or self.ended or self.transport.is_closing():
            return
        queued = self.transport.get_write_buffer_size()
        if queued >= self.stalled:
            self.drop(f"client read nothing of {queued} queued bytes in {STALL_S:g}s")
        else:  # reading, slowly: look again
            self.stalled = queued
            self.hub.loop.call_later(STALL_S, self.check_reading)

    def drop(self, why: str) -> None:
        log.warning("[module=%s route=%s req=%s] %s; dropping the connection",
                    self.route.module.name, self.route.spec.path, self.session.id, why)
        self.transport.abort()

    def connection_lost(self, exc) -> None:
        self.end(1006, "")

    # Protocol events

    def process(self) -> None:
        for event in self.ws.events():
            if self.ended:
                return
            if isinstance(event, Message):
                self.parts.append(event.data)
                if event.message_finished:
                    parts, self.parts = self.parts, []
                    if isinstance(event, TextMessage):
                        self.dispatch(calls.MESSAGE, "".join(parts).encode(), calls.TEXT)
                    else:
                        self.dispatch(calls.MESSAGE, b"".join(parts), calls.BINARY)
            elif isinstance(event, Ping):
                self.write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    self.write(self.ws.send(event.response()))
                    self.end(event.code, event.reason or "")
                elif self.ws.state is ConnectionState.CLOSED:
                    self.end(event.code, event.reason or "")
                else:
                    self.fail(event.code, event.reason or "protocol error")

    def dispatch(self, event: int, data: bytes = b"", arg: int = 0) -> None:
        if event == calls.MESSAGE:
            self.hub.dispatcher.counters.add(WS_MESSAGES)
            metrics.WS_MESSAGES.labels(self.route.module.name, self.route.spec.path).inc()
        outcome = calls.call(self.route, self.session, event, data, arg)
        if outcome.ok:
            self.apply(outcome.actions)
            return
        handler = self.route.spec.symbols[calls.EVENTS[event]]
        self.hub.dispatcher.fault(outcome.result, outcome.signal, self.route.module.name, self.route.spec.path,
                                  handler, self.session.id, self.route.spec.timeout_ms)
        if event != calls.CLOSE:
            self.close(1011, f"handler {handler} failed")

    def apply(self, actions: list) -> None:
        for action, kind, code, a, b in actions:
            if action == calls.SEND:
                self.send(kind, a)
            elif action == calls.CLOSE_CONNECTION:
                self.close(code, a.decode())
            elif action == calls.SUBSCRIBE:
                self.hub.subscribe(self, a.decode())
            elif action == calls.UNSUBSCRIBE:
                self.hub.unsubscribe(self, a.decode())
            elif action == calls.PUBLISH:
                self.hub.publish(a.decode(), kind, b)
            elif action == calls.SEND_POSITION:
                self.send(calls.TEXT, a + calls.position(self.session).encode())
            elif action == calls.RESUME:
                self.hub.resume(self, a.decode())

    # Output

    def write(self, data: bytes) -> None:
        if data and not self.transport.is_closing():
            self.largest = max(self.largest, len(data))
            self.transport.write(data)
            if self.stalled is not None and \
                    self.transport.get_write_buffer_size() > self.hub.config.ws_send_buffer + 2 * self.largest:
                self.drop(f"client not reading; {self.transport.get_write_buffer_size()} bytes unsent")

    def send(self, kind: int, data: bytes) -> None:
        """A message from the handler (checked: text is UTF-8, server/runtime/websocket.c)."""
        if self.ws.state is ConnectionState.OPEN:
            self.write(data_frame(kind, data))

    def publication(self, origin: int, seq: int, kind: int, data: bytes) -> None:
        """Send a publication unless this connection already had it (before a move)."""
        seen = self.session.seen
        if seq > seen.get(origin, 0):
            seen[origin] = seq
            self.send(kind, data)

    def ping(self) -> None:
        self.pinged = True
        if self.ws.state is ConnectionState.OPEN:
            self.write(self.ws.send(Ping()))

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; drop the connection if the client does
        not answer within CLOSE_WAIT."""
        if self.ws.state is ConnectionState.OPEN:
            self.write(self.ws.send(CloseConnection(code, reason)))
            self.hub.loop.call_later(CLOSE_WAIT, self.transport.abort)

    def fail(self, code: int, reason: str) -> None:
        """Close after a protocol violation: no further input is read."""
        log.info("[module=%s route=%s req=%s] closing with %d: %s", self.route.module.name, self.route.spec.path,
                 self.session.id, code, reason)
        self.close(code, reason)
        self.end(code, reason)

    def end(self, code: int, reason: str) -> None:
        """The connection is over for this worker: tell the handler once."""
        if self.ended:
            return
        self.ended = True
        self.hub.unregister(self, moved_out=self.moved)
        if not self.moved:
            self.dispatch(calls.CLOSE, reason.encode(), code)
        if self.transport:
            self.transport.close()  # after what is queued, the close frame included

    # Moving to another worker

    def start_move(self) -> None:
        """Stop reading at the next message boundary."""
        self.moving = True
        if not self.in_message and not self.ended:
            self.pause()

    def pause(self) -> None:
        if self.paused_at is None:
            self.paused_at = time.time()
            self.transport.pause_reading()

    @property
    def ready_to_move(self) -> bool:
        return (self.ws.state is ConnectionState.OPEN and not self.in_message
                and not self.transport.get_write_buffer_size())

    def detach(self) -> tuple[int, dict]:
        """Give up the socket: a duplicate of its descriptor, and what the
        new worker needs to go on where this one stopped."""
        fd = os.dup(self.transport.get_extra_info("socket").fileno())
        self.moved = True
        self.end(1001, "moved")
        return fd, {**self.session.to_wire(), "pending": base64.b64encode(self.buffer).decode(),
                    "paused_at": self.paused_at}
