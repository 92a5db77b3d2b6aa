"""The opening handshake (RFC 6455 section 4.2), from gunicorn's parsed request.

gunicorn has already parsed the request line and headers, so only the checks
and the answer are left; wsproto supplies the accept token. No extension is
negotiated: permessage-deflate would carry compressor state that cannot move
to another process with the connection.
"""
from __future__ import annotations

from wsproto.utilities import generate_accept_token


class Refused(Exception):
    """A request that cannot be upgraded: status, message, extra headers."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or []


def _tokens(value: str | None) -> list[str]:
    return [t.strip() for t in (value or "").split(",") if t.strip()]


def accept(method: str, version: tuple[int, int], headers: dict[str, str],
           subprotocols: tuple[str, ...]) -> tuple[list[tuple[str, str]], str]:
    """Check an upgrade request; return the 101's headers and the chosen subprotocol.

    :param headers: request headers by upper-case name (gunicorn's spelling).
    :param subprotocols: the route's, in order of preference.
    :raises Refused: 426 for a plain request, 400 for a broken handshake.
    """
    if "websocket" not in (t.lower() for t in _tokens(headers.get("UPGRADE"))):
        raise Refused(426, "this path takes WebSocket connections only",
                      [("Upgrade", "websocket"), ("Connection", "Upgrade")])
    if method != "GET" or version < (1, 1):
        raise Refused(400, "a WebSocket handshake is a GET over HTTP/1.1")
    if "upgrade" not in (t.lower() for t in _tokens(headers.get("CONNECTION"))):
        raise Refused(400, "the handshake needs `Connection: Upgrade`")
    if headers.get("SEC-WEBSOCKET-VERSION") != "13":
        raise Refused(426, "only WebSocket version 13 is supported", [("Sec-WebSocket-Version", "13")])
    key = headers.get("SEC-WEBSOCKET-KEY", "")
    if len(key) != 24 or not key.endswith("=="):
        raise Refused(400, "missing or malformed Sec-WebSocket-Key")
    offered = _tokens(headers.get("SEC-WEBSOCKET-PROTOCOL"))
    chosen = next((p for p in subprotocols if p in offered), "")
    reply = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
             ("Sec-WebSocket-Accept", generate_accept_token(key.encode()).decode())]
    if chosen:
        reply.append(("Sec-WebSocket-Protocol", chosen))
    return reply, chosen
