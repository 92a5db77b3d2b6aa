"""Calling a connection's C handlers, and what a call asks the host to do.

A :class:`Session` is everything about a connection that outlives the code
serving it: it is what moves to another worker on a deploy. A call returns
its :class:`Outcome`: the handler's result, the actions it queued (sends,
close, subscriptions, publications: the outbox of server/runtime/websocket.c)
and the connection's new state.
"""
from __future__ import annotations

import base64
import math
import struct
import threading
import time
from dataclasses import dataclass, field

from .. import libhotplate
from ..libhotplate import RT_OK
from ..modules import Socket

OPEN, MESSAGE, CLOSE = libhotplate.WS_OPEN, libhotplate.WS_MESSAGE, libhotplate.WS_CLOSE
SEND, CLOSE_CONNECTION, SUBSCRIBE, UNSUBSCRIBE, PUBLISH, SEND_POSITION, RESUME = (
    libhotplate.OUT_SEND, libhotplate.OUT_CLOSE, libhotplate.OUT_SUBSCRIBE, libhotplate.OUT_UNSUBSCRIBE, libhotplate.OUT_PUBLISH,
    libhotplate.OUT_SEND_POSITION, libhotplate.OUT_RESUME)
EVENTS = {OPEN: "open", MESSAGE: "message", CLOSE: "close"}
TEXT, BINARY = 1, 2  # HP_WS_TEXT, HP_WS_BINARY: ABI 2 of hotplate.h, fixed for good
_RECORD = struct.Struct("=BBHII")
_MADE, _SEEN = struct.Struct("<d"), struct.Struct("<QQ")
#: publishers a position names: what fits in HP_WS_POSITION_MAX (1024) characters of base64
POSITION_PUBLISHERS = 47
_local = threading.local()


@dataclass
class Session:
    """A connection's identity and state, independent of the worker serving it."""

    id: str
    route: str
    blob: bytes
    nparams: int
    nheaders: int
    subprotocol: str = ""
    state: bytes = b""
    #: subscribed topics, each with the (wall-clock) time of subscribing
    topics: dict[str, float] = field(default_factory=dict)
    #: the last publication delivered from each publishing worker: (pid, seq) order
    seen: dict[int, int] = field(default_factory=dict)
    #: the last event delivered of each followed background job (websocket/jobs.py)
    jobs: dict[str, int] = field(default_factory=dict)

    def to_wire(self) -> dict:
        return {"id": self.id, "route": self.route, "blob": base64.b64encode(self.blob).decode(),
                "nparams": self.nparams, "nheaders": self.nheaders, "subprotocol": self.subprotocol,
                "state": base64.b64encode(self.state).decode(), "topics": list(self.topics.items()),
                "seen": list(self.seen.items()), "jobs": self.jobs}

    @classmethod
    def from_wire(cls, d: dict) -> "Session":
        return cls(d["id"], d["route"], base64.b64decode(d["blob"]), d["nparams"], d["nheaders"],
                   d["subprotocol"], base64.b64decode(d["state"]), dict(d["topics"]), dict(d["seen"]),
                   dict(d.get("jobs", {})))


def position(session: Session) -> str:
    """hp_ws_send_position: the time now and the last publication sent from
    each publisher (the latest ``POSITION_PUBLISHERS``), as base64url."""
    seen = list(session.seen.items())[-POSITION_PUBLISHERS:]
    raw = _MADE.pack(time.time()) + b"".join(_SEEN.pack(origin, seq) for origin, seq in seen)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def parse_position(token: str) -> tuple[float, dict[int, int]]:
    """(when it was made, {publisher: last seq}) of a position; ValueError if it is not one."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))  # binascii.Error is a ValueError
    if len(raw) < _MADE.size or (len(raw) - _MADE.size) % _SEEN.size:
        raise ValueError("not a position")
    made = _MADE.unpack_from(raw)[0]
    if not math.isfinite(made):
        raise ValueError("not a position")
    return made, dict(_SEEN.iter_unpack(raw[_MADE.size:]))


@dataclass
class Outcome:
    """What one handler call did: an HP_RT_* code (HP_RT_HANDLER_ERROR when
    the handler returned HP_ERROR), the signal that stopped a crashed one,
    and the actions of a successful one."""

    result: int = RT_OK
    signal: int = 0
    actions: list[tuple[int, int, int, bytes, bytes]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result == RT_OK


def parse_outbox(data: bytes) -> list[tuple[int, int, int, bytes, bytes]]:
    """Outbox records as (action, type, code, a, b)."""
    out, pos = [], 0
    while pos < len(data):
        action, kind, code, len_a, len_b = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        a = data[pos:pos + len_a]
        pos += len_a
        out.append((action, kind, code, a, data[pos:pos + len_b]))
        pos += len_b
    return out


def call(socket: Socket, session: Session, event: int, data: bytes = b"", arg: int = 0) -> Outcome:
    """Run the route's handler for ``event``; updates ``session.state``.

    Text ``data`` reaches C NUL-terminated: CPython keeps a NUL after every
    bytes object's contents.
    """
    handler = socket.handlers.get(EVENTS[event])
    if not handler:
        return Outcome()
    ffi, lib = libhotplate.load()
    try:
        out = _local.result
    except AttributeError:
        out = _local.result = ffi.new("hp_rt_result *")
    rc = lib.hp_rt_ws_event(socket.module.handle, handler, event, session.blob, len(session.blob),
                            session.nparams, session.nheaders, session.subprotocol.encode(),
                            session.state, len(session.state), data, len(data), arg, socket.spec.timeout_ms, out)
    try:
        outcome = Outcome(rc, out.signal)
        if out.outbox_len:
            outcome.actions = parse_outbox(ffi.unpack(out.outbox, out.outbox_len))
        if out.state_used:
            session.state = ffi.unpack(ffi.cast("char *", out.state), out.state_len)
        return outcome
    finally:
        lib.hp_rt_release(out)
