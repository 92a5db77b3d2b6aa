"""WebSocket connections in C, kept open across deploys.

A gunicorn worker thread answers the handshake (:mod:`.handshake`) and hands
the socket to the worker's event loop (:mod:`.hub`), where each connection
(:mod:`.connection`) parses frames with wsproto and calls the module's
handlers (:mod:`.calls`). Workers publish to each other's subscribers over a
local bus (:mod:`.bus`). When a roll retires a worker, its connections move,
socket and all, to a worker of the new generation (:mod:`.transfer`).
"""
