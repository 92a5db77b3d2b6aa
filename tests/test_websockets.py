"""WebSocket routes end to end: real gunicorn, real git pushes, the `websockets` client."""
import asyncio
import concurrent.futures
import json
import os
import signal
import socket
import struct
import time

import pytest
import requests
import websockets
from websockets.exceptions import ConnectionClosed

from .conftest import APPS, Work, write_app

MANIFEST = """\
    modules:
      ws:
        source: modules/wsecho.c
        cflags: [-DVERSION="{version}"]
        health: /health
        routes:
          - {{path: /say/<room>, handler: say, methods: [POST]}}
          - {{path: /health, handler: health}}
        websockets:
          - path: /ws/<room>
            on_open: ws_open
            on_message: ws_message
            on_close: ws_close
            subprotocols: [echo.v2, echo.v1]
            max_message: 64KiB
            timeout: 1s
    """


def manifest(version: str = "v1") -> str:
    return MANIFEST.format(version=version)


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_url(server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


@pytest.fixture
def wsapp(tmp_path):
    return write_app(tmp_path / "app", manifest(), copy=("wsecho.c",))


def test_echo_state_subprotocol_and_refusal(serve, wsapp):
    server = serve(wsapp)

    async def go():
        async with websockets.connect(ws_url(server, "/ws/r1"), subprotocols=["echo.v1", "other"]) as ws:
            hello = await ws.recv()
            assert hello.startswith("hello v1 ") and hello.endswith(" echo.v1") and ws.subprotocol == "echo.v1"
            for i in range(1, 4):
                await ws.send(f"m{i}")
                assert await ws.recv() == f"v1 {i} m{i}", "state (a counter) persists between messages"
            await ws.send(b"\x00\xff")
            assert await ws.recv() == b"\x00\xff"
            await ws.send(["frag", "mented"])
            assert await ws.recv() == "v1 5 fragmented"
            await ws.send("bigstate")
            assert await ws.recv() == "refused"
            await ws.send("close")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "asked to")
        async with websockets.connect(ws_url(server, "/ws/r1")) as ws:
            assert (await ws.recv()).endswith(" ") and ws.subprotocol is None
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(ws_url(server, "/ws/r1?token=bad"))
        assert refused.value.response.status_code == 403
        assert b"refused by ws_open" in refused.value.response.body

    run(go())
    plain = requests.get(server.url + "/ws/r1", timeout=5)
    assert plain.status_code == 426 and plain.headers["Upgrade"] == "websocket"


def test_publish_reaches_every_worker(serve, wsapp):
    server = serve(wsapp, workers=2)

    async def go():
        clients = await on_both_workers(server, "/ws/room")
        await clients[0].send("pub from a socket")
        assert [await c.recv() for c in clients] == ["from a socket"] * len(clients)
        reply = await asyncio.to_thread(requests.post, server.url + "/say/room", data=b"from HTTP", timeout=5)
        assert reply.status_code == 200
        assert [await c.recv() for c in clients] == ["from HTTP"] * len(clients)
        async with websockets.connect(ws_url(server, "/ws/elsewhere")) as other:
            await other.recv()
            await clients[0].send("pub only room")
            assert await clients[-1].recv() == "only room"
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(other.recv(), 0.3)
        for c in clients:
            await c.close()

    run(go())


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    """A client frame, built by hand to break the rules the client library keeps."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def raw_connect(server, path: str = "/ws/r1") -> tuple[socket.socket, int]:
    """A WebSocket opened by hand, and the pid of the worker serving it."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
    hello = read_until(sock, b"hello v1")
    return sock, int(hello.split(b"hello v1 ")[1].split(b"-")[0], 16)


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed before {marker!r}: {data!r}"
        data += chunk
    return data


def close_code(sock: socket.socket) -> int:
    """Read until the server's close frame; return its code."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection ended without a close frame: {data!r}")
        data += chunk
        pos = 0
        while len(data) - pos >= 2:
            opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
            if opcode == 8:
                return struct.unpack(">H", data[pos + 2:pos + 4])[0]
            pos += 2 + n


@pytest.mark.parametrize("bad, code", [
    (frame(1, b"\xff\xfe"), 1007),                         # invalid UTF-8 in a text frame
    (frame(1, b"ok \xff", fin=False), 1007),               # ... in a fragment: at once, not at the message's end
    (frame(1, b"ok \xe2\x82", fin=False) + frame(0, b"x", fin=False), 1007),  # ... across two fragments
    (frame(2, b"x", masked=False), 1002),                  # clients must mask
    (frame(0, b"x"), 1002),                                # continuation without a start
    (frame(2, b"x" * (64 * 1024 + 1)), 1009),              # over max_message
    (frame(2, b"x" * 40000, fin=False) + frame(0, b"x" * 40000), 1009),  # over it in fragments
    (frame(1, b"crash"), 1011),                            # the handler crashed
    (frame(1, b"fail"), 1011),                             # the handler returned HP_ERROR
    (frame(1, b"spin"), 1011),                             # the handler ran past its 1 s timeout
])
def test_bad_input_closes_with_the_right_code(serve, wsapp, bad, code):
    server = serve(wsapp)
    sock, _ = raw_connect(server)
    sock.sendall(bad)
    assert close_code(sock) == code
    sock.close()
    assert requests.get(server.url + "/_hotplate/health", timeout=5).status_code == 200


def test_ping_is_answered_and_silent_clients_are_dropped(serve, wsapp):
    server = serve(wsapp, extra_env={"HOTPLATE_WS_PING_INTERVAL": "1", "HOTPLATE_WS_PING_TIMEOUT": "1"})
    sock, _ = raw_connect(server)
    sock.sendall(frame(9, b"are you there"))
    data = b""
    while b"are you there" not in data:
        data += sock.recv(4096)
    assert data[data.index(b"are you there") - 2] == 0x8A, "a pong carries the ping's payload"
    started = time.monotonic()
    got_ping = False
    while True:  # never answer the server's pings
        chunk = sock.recv(4096)
        if not chunk:
            break
        got_ping |= chunk[0] == 0x89
    assert got_ping and 1.5 < time.monotonic() - started < 6


def test_client_that_never_reads_is_dropped(serve, wsapp):
    server = serve(wsapp, extra_env={"HOTPLATE_WS_SEND_BUFFER": "65536"})
    sock, _ = raw_connect(server)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    message = frame(2, b"y" * 60000)
    with pytest.raises(OSError):
        for _ in range(2000):  # echoes pile up unread until the server gives up
            sock.sendall(message)
    assert requests.get(server.url + "/_hotplate/health", timeout=5).status_code == 200


def test_one_message_bigger_than_the_send_buffer_reaches_a_client_that_reads(serve, tmp_path):
    """A single message past HOTPLATE_WS_SEND_BUFFER is no slow reader: a
    client that reads gets it whole, twice in a row (issue 21: it was dropped
    as "not reading")."""
    app = write_app(tmp_path / "app", manifest().replace("max_message: 64KiB", "max_message: 16MiB"), copy=("wsecho.c",))
    server = serve(app, extra_env={"HOTPLATE_WS_SEND_BUFFER": "65536"})
    big = os.urandom(12 * 1024 * 1024)  # 192 times the buffer, and past the kernel's socket buffers

    async def go():
        async with websockets.connect(ws_url(server, "/ws/r1"), max_size=16 * 1024 * 1024) as ws:
            await ws.recv()  # its hello
            for _ in range(2):
                await ws.send(big)
                assert await ws.recv() == big
    run(go())


def deploy(work: Work, version: str, health: int = 200, sockets: bool = True) -> str:
    text = manifest(version).replace("-DVERSION", f"-DHEALTH={health}, -DVERSION")
    if not sockets:
        text = text[:text.index("        websockets:")]
    work.commit(f"deploy {version}", {"deploy.yaml": text})
    return work.push()


@pytest.fixture
def hosted(up, tmp_path):
    server = up(workers=2)
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    (work.path / "modules").mkdir()
    (work.path / "modules" / "wsecho.c").write_bytes((APPS / "wsecho.c").read_bytes())
    assert "deploy succeeded" in deploy(work, "v1")
    return server, work


async def on_both_workers(server, path: str) -> list:
    """Connections to path until both workers hold one (hello read)."""
    clients, pids = [], set()
    while len(pids) < 2 and len(clients) < 40:
        ws = await websockets.connect(ws_url(server, path))
        pids.add((await ws.recv()).split()[2].split("-")[0])
        clients.append(ws)
    assert len(pids) == 2, "connections landed on both workers"
    return clients


async def open_clients(server, path: str, n: int) -> tuple[list, list[str]]:
    """n connections to path, and the hello line each got."""
    clients = [await websockets.connect(ws_url(server, path)) for _ in range(n)]
    return clients, [await c.recv() for c in clients]


class Talker:
    """A client that sends numbered messages every ``interval`` and checks
    every answer: once each, in order, tagged with the code version."""

    def __init__(self, ws, interval: float):
        self.ws, self.interval = ws, interval
        self.sent = 0
        self.answers: list[tuple[str, int, int]] = []  # (version, count, number)
        self.gaps: list[float] = []

    async def talk(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sent += 1
            started = time.monotonic()
            await self.ws.send(f"n{self.sent}")
            version, count, number = (await self.ws.recv()).split()
            self.gaps.append(time.monotonic() - started)
            self.answers.append((version, int(count), int(number[1:])))
            await asyncio.sleep(self.interval)

    def check(self) -> list[str]:
        assert [n for _, _, n in self.answers] == list(range(1, self.sent + 1)), "each message answered once, in order"
        assert [c for _, c, _ in self.answers] == list(range(1, self.sent + 1)), "state moved with the connection"
        return [v for v, _, _ in self.answers]


def test_connections_survive_deploys_that_change_the_handler(hosted):
    server, work = hosted

    async def go():
        clients, hellos = await open_clients(server, "/ws/room", 8)
        ids = [hello.split()[2] for hello in hellos]
        talkers = [Talker(c, 0.01) for c in clients]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(t.talk(stop)) for t in talkers]
        for version in ("v2", "v3", "v4"):
            out = await asyncio.to_thread(deploy, work, version)
            assert "deploy succeeded" in out, out
            await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*tasks)
        for talker in talkers:
            versions = talker.check()
            assert versions == sorted(versions), "never back to older code"
            assert versions[0] == "v1" and versions[-1] == "v4"
        await clients[0].send("pub still subscribed")
        assert [await c.recv() for c in clients] == ["still subscribed"] * len(clients)
        await clients[0].send("close")
        with pytest.raises(ConnectionClosed):
            await clients[0].recv()
        for c in clients[1:]:
            await c.send("who")
            assert (await c.recv()).startswith("v4 ")
        metrics = (await asyncio.to_thread(requests.get, server.api + "/metrics", timeout=5)).text
        assert "hotplate_websocket_connections 7.0" in metrics.splitlines(), metrics
        assert 'hotplate_websocket_connections_events_total{event="moved_in"}' in metrics
        assert 'hotplate_websocket_messages_total{module="ws",route="/ws/<room>"}' in metrics
        return ids

    ids = run(go(), timeout=120)
    assert len(set(ids)) == 8


def test_route_removed_by_a_deploy_closes_with_1001(hosted):
    server, work = hosted

    async def go():
        ws = await websockets.connect(ws_url(server, "/ws/room"))
        await ws.recv()
        out = await asyncio.to_thread(deploy, work, "v2", sockets=False)
        assert "deploy succeeded" in out, out
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 1001 and "removed" in closed.value.rcvd.reason

    run(go())


def test_connections_stay_up_when_a_deploy_rolls_back(hosted):
    server, work = hosted

    async def go():
        clients, _ = await open_clients(server, "/ws/room", 4)
        talkers = [Talker(c, 0.01) for c in clients]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(t.talk(stop)) for t in talkers]
        out = await asyncio.to_thread(deploy, work, "v2", health=503)
        assert "deploy ROLLED BACK" in out, out
        deadline = time.monotonic() + 30  # until every connection answers from the old code again
        while not all(t.answers and t.answers[-1][0] == "v1" for t in talkers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert all(t.answers[-1][0] == "v1" for t in talkers), [(t.sent, t.answers[-1:]) for t in talkers]
        stop.set()
        await asyncio.gather(*tasks)
        for talker in talkers:
            assert talker.check()[-1] == "v1", "the rollback moved them back to the old code"

    run(go(), timeout=120)


def test_publications_arrive_once_across_deploys(hosted):
    server, work = hosted

    async def go():
        subscribers, _ = await open_clients(server, "/ws/news", 6)
        (publisher,), _ = await open_clients(server, "/ws/news", 1)
        stop = asyncio.Event()
        sent = 0

        async def publish():
            nonlocal sent
            while not stop.is_set():
                sent += 1
                await publisher.send(f"pub p{sent}")
                await asyncio.sleep(0.005)

        received = {id(s): [] for s in subscribers}

        async def listen(s):
            while True:
                message = await s.recv()
                received[id(s)].append(message)
                if message == "done":
                    return

        listeners = [asyncio.create_task(listen(s)) for s in subscribers]
        task = asyncio.create_task(publish())
        await asyncio.sleep(0.5)
        (late,), _ = await open_clients(server, "/ws/news", 1)  # subscribes while publications flow
        received[id(late)] = []
        listeners.append(asyncio.create_task(listen(late)))
        for version in ("v2", "v3"):
            assert "deploy succeeded" in await asyncio.to_thread(deploy, work, version)
        stop.set()
        await task
        await publisher.send("pub done")
        await asyncio.gather(*listeners)
        for got in received.values():
            numbers = [int(m[1:]) for m in got if m != "done"]
            if got is received[id(late)]:
                assert 1 < min(numbers) and sorted(numbers) == list(range(min(numbers), sent + 1)), \
                    "a late subscriber gets what was published after it subscribed, once each"
            else:
                assert sorted(numbers) == list(range(1, sent + 1)), "every publication arrived exactly once"

    run(go(), timeout=120)


def test_a_crash_closes_one_connection_and_moves_the_others(serve, wsapp):
    server = serve(wsapp, workers=2)

    async def go():
        said = await asyncio.to_thread(requests.post, server.url + "/say/r1", data=b"before anyone", timeout=5)
        assert said.status_code == 200
        by_worker: dict[str, list] = {}
        while not any(len(v) >= 3 for v in by_worker.values()):
            ws = await websockets.connect(ws_url(server, "/ws/r1"))
            by_worker.setdefault((await ws.recv()).split()[2].split("-")[0], []).append(ws)
        crashing, *others = next(v for v in by_worker.values() if len(v) >= 3)
        for ws in others:
            await ws.send("before")
            assert (await ws.recv()).endswith(" 1 before")
        await crashing.send("crash")
        with pytest.raises(ConnectionClosed) as closed:
            await crashing.recv()
        assert closed.value.rcvd.code == 1011
        await asyncio.sleep(1)
        for ws in others:
            await ws.send("after")
            assert await ws.recv() == "v1 2 after", "the connection moved with its state"
        said = await asyncio.to_thread(requests.post, server.url + "/say/r1", data=b"news", timeout=5)
        assert said.status_code == 200
        for ws in others:
            assert await ws.recv() == "news", "no publication from before it subscribed, none lost"

    run(go())
    assert "crashed with SIGSEGV" in server.output()
    assert "connections arrived" in server.output()


def test_a_message_half_sent_during_a_deploy_is_finished_by_the_old_code(hosted):
    server, work = hosted
    sock, worker = raw_connect(server, "/ws/room")
    sock.sendall(frame(1, b"first half, ", fin=False))
    report = server.state / "run" / "workers" / f"{worker}.json"
    pushing = concurrent.futures.ThreadPoolExecutor(1).submit(deploy, work, "v2")
    server.wait(lambda: not report.exists() or json.loads(report.read_text())["retiring"], what="the old worker to retire")
    sock.sendall(frame(0, b"second half") + frame(1, b"next"))  # one segment: the boundary is inside it
    data = read_until(sock, b"next")
    assert "deploy succeeded" in pushing.result(60)
    assert b"v1 1 first half, second half" in data, "the old code got the whole message"
    # "next" is the old code's if it arrived before the move began, else the new code's: either way, with the state
    assert b"v1 2 next" in data or b"v2 2 next" in data, data
    sock.sendall(frame(1, b"after"))
    assert b"v2 3 after" in read_until(sock, b"after"), "moved to the new code with its state"
    sock.close()


def test_websocket_route_of_a_module_that_failed_to_load_answers_503(serve, tmp_path):
    app = write_app(tmp_path / "fragile", """\
        modules:
          fragile:
            source: modules/initfail.c
            routes: [{path: /fragile, handler: fragile}]
            websockets: [{path: /live, on_message: fragile_message}]
        """, copy=("initfail.c",))
    (app / "modules" / "initfail.c").write_text((app / "modules" / "initfail.c").read_text() + (
        "HP_EXPORT int fragile_message(hp_ws *ws, const void *d, size_t n, int t) { return HP_OK; }\n"))
    server = serve(app, data_files=("fail-init",))  # hp_init fails in the workers only
    with pytest.raises(websockets.InvalidStatus) as refused:
        run(websockets.connect(ws_url(server, "/live")))
    assert refused.value.response.status_code == 503
    assert b"module fragile is not loaded: hp_init returned -1" in refused.value.response.body


def test_connections_survive_a_plain_sighup(serve, wsapp):
    server = serve(wsapp, workers=2)

    async def go():
        clients, _ = await open_clients(server, "/ws/r1", 6)
        talkers = [Talker(c, 0.01) for c in clients]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(t.talk(stop)) for t in talkers]
        server.proc.send_signal(signal.SIGHUP)  # gunicorn starts new workers as it stops the old ones
        await asyncio.sleep(3)
        stop.set()
        await asyncio.gather(*tasks)
        for talker in talkers:
            talker.check()

    run(go())
    assert "connections arrived" in server.output()
