"""The server end to end: real gcc, real gunicorn on loopback, real HTTP."""
import concurrent.futures
import hashlib
import itertools
import random
import socket
import time

import pytest
import requests

from .conftest import ROOT, wait_for, write_app

ECHO_APP = """\
    modules:
      echo:
        source: modules/echo.c
        routes:
          - {path: "/echo/<name>", methods: [GET, POST, PUT], handler: echo}
          - {path: "/echo/<int:name>", handler: echo}
          - {path: /echo/fixed, handler: echo}
          - {path: "/tree/<path:name>", handler: echo}
          - {path: /slash/, handler: echo}
          - {path: "/users/<int:id>", handler: user}
          - {path: /raw, methods: [POST], handler: raw}
          - {path: /big, handler: big}
          - {path: /form, methods: [POST], handler: form}
          - {path: /stream, handler: stream, timeout: 120}
          - {path: "/status/<int:code>", handler: status}
    """

FAULTS_APP = """\
    modules:
      faults:
        source: modules/faults.c
        routes:
          - {path: /ok, handler: ok}
          - {path: /segv, handler: segv}
          - {path: /fpe, handler: fpe}
          - {path: /overflow, handler: overflow}
          - {path: /loop, handler: loop, timeout: 500ms}
          - {path: /churn, handler: churn, timeout: 100ms}
          - {path: /stuck, handler: stuck, timeout: 200ms}
          - {path: /slow, handler: slow}
          - {path: /fail, handler: fail}
      fragile:
        source: modules/initfail.c
        routes:
          - {path: /fragile, handler: fragile}
    """


@pytest.fixture(params=["fast", "driven"])
def echo(request, serve, tmp_path):
    """The echo app, served each way C's request core is fed: the fast path
    (its own threads accept; with the access log on), and with the fast path
    off, gunicorn's threads handing it each connection."""
    app = write_app(tmp_path / "echo", ECHO_APP, copy=("echo.c",))
    env = {"HOTPLATE_MAX_BODY": "65536"}
    if request.param == "fast":
        env["HOTPLATE_ACCESSLOG"] = "-"
    else:
        env["HOTPLATE_FAST_PATH"] = "0"
    server = serve(app, extra_env=env)
    server.path = request.param
    return server


def test_demo_app_serves_every_module(serve):
    server = serve(ROOT, workers=2)
    get = lambda path, **kw: requests.get(server.url + path, timeout=5, **kw)
    assert get("/").text == "Hello, world!\n"
    assert get("/hello", params={"name": "Ada Lovelace"}).text == "Hello, Ada Lovelace!\n"
    page = get("/hello/<script>")
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "&lt;script&gt;" in page.text and "<script>" not in page.text
    moved = get("/old", allow_redirects=False)
    assert moved.status_code == 301 and moved.headers["Location"] == "/"
    assert get("/api/users/1").json() == {"id": 1, "name": 'Ada "Countess" Lovelace', "service": "hotplate-demo"}
    assert get("/api/users/0").status_code == 400
    assert get("/api/users/abc").status_code == 404
    greet = requests.post(server.url + "/api/greet", json={"name": "Ada", "times": 2}, timeout=5)
    assert greet.json()["greetings"] == ["Hello, Ada!", "Hello, Ada!"]
    bad = requests.post(server.url + "/api/greet", data="{nope", timeout=5)
    assert bad.status_code == 400 and bad.json()["error"] == "line 1, column 5: string or '}' expected near 'nope'"
    created = requests.post(server.url + "/notes", data="buy milk", timeout=5)
    assert created.status_code == 201
    assert {"id": created.json()["id"], "body": "buy milk"} in get("/notes").json()
    assert get("/notes/health").text == "ok\n"
    with requests.Session() as browser:  # signed session cookies, checked by either worker
        assert browser.get(server.url + "/session/me", timeout=5).status_code == 401
        assert browser.post(server.url + "/session/login?name=Ada", timeout=5).text == "logged in as Ada\n"
        cookie = next(c for c in browser.cookies if c.name == "session")
        assert cookie.has_nonstandard_attr("HttpOnly") and cookie.path == "/"
        assert browser.get(server.url + "/session/me", timeout=5).text == "you are Ada\n"
        tampered = "session=" + cookie.value.replace(".", "x.", 1)
        assert get("/session/me", headers={"Cookie": tampered}).status_code == 401
        assert browser.post(server.url + "/session/logout", timeout=5).text == "logged out\n"
        assert browser.get(server.url + "/session/me", timeout=5).status_code == 401
    with requests.Session() as s:  # one keep-alive connection: one worker
        counts = [s.get(server.url + "/counter", timeout=5).json() for _ in range(3)]
    assert len({c["worker"] for c in counts}) == 1
    assert [c["hits"] for c in counts] == list(range(counts[0]["hits"], counts[0]["hits"] + 3))
    shared = [get("/counter").json()]  # new connections, until both workers answered: one store
    deadline = time.monotonic() + 30
    while len({c["worker"] for c in shared}) < 2 and time.monotonic() < deadline:
        shared.append(get("/counter").json())
    assert len({c["worker"] for c in shared}) == 2
    totals = [c["total_hits"] for c in shared]
    assert totals == list(range(totals[0], totals[0] + len(shared)))
    task = requests.post(server.url + "/tasks", data={"steps": "3"}, timeout=5)  # a form starts a background job
    assert task.status_code == 202, task.text
    done = wait_for(lambda: (t := get(f"/tasks/{task.json()['id']}").json())["state"] == "succeeded" and t,
                    what="the demo's job")
    assert done["result"] == "done after 3 steps" and done["progress"] == 100
    assert requests.post(server.url + "/tasks", data={"steps": "0"}, timeout=5).status_code == 400
    export = get("/export?rows=100000")  # 2 MB: sent in parts
    assert export.headers["Transfer-Encoding"] == "chunked" and export.text.splitlines()[-1] == "100000,10000000000,186a0"
    health = get("/_hotplate/health").json()
    assert health["status"] == "ok" and health["release"].startswith("r")


def test_forms_and_a_5_mb_multipart_upload_are_parsed(serve, tmp_path):
    echo = serve(write_app(tmp_path / "echo", ECHO_APP, copy=("echo.c",)))  # the default body limit, 10 MiB
    upload = bytes(range(256)) * (5 * 4096) + b"\r\n--not-the-boundary\r\n\x00"  # 5 MiB of every byte value
    r = requests.post(echo.url + "/form", timeout=30, data={"name": "Ada Lovelace", "lang": "C"},
                      files={"file": ("notes.bin", upload, "application/octet-stream")})
    body = r.json()
    assert body["error"] is None and body["first_name"] == "Ada Lovelace"
    assert body["fields"] == [
        {"name": "name", "filename": None, "content_type": None, "len": 12,
         "sha256": hashlib.sha256(b"Ada Lovelace").hexdigest()},
        {"name": "lang", "filename": None, "content_type": None, "len": 1, "sha256": hashlib.sha256(b"C").hexdigest()},
        {"name": "file", "filename": "notes.bin", "content_type": "application/octet-stream", "len": len(upload),
         "sha256": hashlib.sha256(upload).hexdigest()}]
    plain = requests.post(echo.url + "/form", data={"name": "a&b=c é", "x": ""}, timeout=5).json()
    assert plain["first_name"] == "a&b=c é" and [f["name"] for f in plain["fields"]] == ["name", "x"]
    broken = requests.post(echo.url + "/form", data=b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\nno end",
                           headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=5).json()
    assert broken == {"error": "multipart: no closing boundary", "first_name": None, "fields": []}


def raw_exchange(url: str, data: bytes, until: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes on one connection; read until ``until`` has arrived (or the server closed)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while until not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_every_answer_names_the_release_that_gave_it(echo):
    release = requests.get(echo.url + "/_hotplate/release", timeout=5).json()["release"]
    assert release.startswith("r")
    for path in ("/users/7", "/status/404"):  # an answer, and a handler's own error
        r = requests.get(echo.url + path, timeout=5)
        assert r.headers["X-Hotplate-Release"] == release, (echo.path, path, r.status_code, r.headers)


def test_expect_100_continue_is_answered_before_the_body(echo):
    head = (b"POST /raw HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n")
    host, port = echo.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head)
        assert s.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any body byte was sent
        s.sendall(b"hello")
        answer = b""
        while not answer.endswith(b"hello"):
            answer += s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 OK")
    refused = raw_exchange(echo.url, head.replace(b"Content-Length: 5", b"Content-Length: 99999999"), b"}")
    assert refused.startswith(b"HTTP/1.1 413") and b"100 Continue" not in refused


def test_no_body_goes_out_with_204_or_304_and_pipelining_survives(echo):
    two = b"GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\nGET /status/304 HTTP/1.1\r\nHost: x\r\n\r\n"
    got = raw_exchange(echo.url, two + b"GET /users/5 HTTP/1.1\r\nHost: x\r\n\r\n", b"user 5\n")
    first, rest = got.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 204") and b"Content-Length" not in first
    assert rest.startswith(b"HTTP/1.1 304") and b"a body" not in got
    assert got.endswith(b"user 5\n")


def test_repeated_request_headers_arrive_joined(echo):
    """gunicorn joins them with ","; the runtime joins any it gets apart with ", " (tests/c/test_sdk.c)."""
    got = raw_exchange(echo.url, b"GET /echo/x HTTP/1.1\r\nHost: x\r\nX-Tag: one\r\nX-Tag: two\r\n"
                                  b"Connection: close\r\n\r\n", b"\x00never")
    assert b'"x_tag":"one, two"' in got or b'"x_tag":"one,two"' in got, got


def logged(server, text: str) -> None:
    """Wait for a line of the server's log: the fast path answers first, and
    its worker's Python side logs faults (and C the access log) just after."""
    wait_for(lambda: text in server.output(), 10, f"{text!r} in the server log", log=server.output())


def rss(pid: int) -> int:
    return int(next(line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS"))) * 1024


def test_a_100_mb_streamed_response_keeps_worker_memory_bounded(echo):
    mb = 100
    with requests.get(echo.url + "/stream", params={"mb": mb}, stream=True, timeout=60) as r:
        assert r.headers["X-Streamed"] == "yes" and "Transfer-Encoding" in r.headers
        pid, total, peak, blocks = int(r.headers["X-Worker"]), 0, 0, 0
        start = rss(pid)
        for chunk in r.iter_content(64 * 1024):
            total += len(chunk)
            if total % (8 << 20) < len(chunk):
                peak = max(peak, rss(pid))
            blocks += chunk[:1] == bytes([ord("a") + (total - len(chunk)) // 65536 % 26])
    assert total == mb << 20
    assert blocks >= total // 65536 * 0.9  # the blocks arrive in order
    assert peak - start < 16 << 20, f"worker RSS grew {(peak - start) >> 20} MiB while streaming"
    assert requests.head(echo.url + "/stream", timeout=5).headers["X-Streamed"] == "no"
    # a client that leaves midway: the handler's writes fail, it returns, the worker serves on
    with requests.get(echo.url + "/stream", params={"mb": 50}, stream=True, timeout=30) as r:
        next(r.iter_content(1 << 20))
    assert requests.get(echo.url + "/users/7", timeout=5).text == "user 7\n"


def test_a_handler_failing_midway_cuts_the_stream_short(echo):
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        with requests.get(echo.url + "/stream", params={"mb": 4, "fail": 1}, stream=True, timeout=30) as r:
            assert r.status_code == 200 and r.headers["X-Streamed"] == "yes"
            for _ in r.iter_content(1 << 16):
                pass
    deadline = time.monotonic() + 30  # the crashed worker is replaced
    while time.monotonic() < deadline:
        try:
            if requests.get(echo.url + "/users/7", timeout=5).text == "user 7\n":
                break
        except requests.RequestException:
            time.sleep(0.05)
    else:
        raise AssertionError("the server did not serve again after the crash")
    logged(echo, "the streamed response was cut short")


def test_request_api_end_to_end(echo):
    r = requests.post(echo.url + "/echo/ad%C3%A9?q=a+b&x=1", data="h\u00e9llo".encode(), timeout=5,
                      headers={"X-Custom": "v1", "Cookie": "session=s3cret; other=1", "X-Request-Id": "abc-123"})
    body = r.json()
    assert r.headers["X-Echo"] == "yes"
    assert body["method"] == "POST" and body["path"] == "/echo/adé" and body["route"] == "/echo/<name>"
    assert body["param_name"] == "adé" and body["query_q"] == "a b" and body["query_string"] == "q=a+b&x=1"
    assert body["cookie_session"] == "s3cret" and body["client"] == "127.0.0.1"
    assert body["request_id"] == "abc-123"
    assert body["body"] == "héllo" and body["body_len"] == 6
    assert body["headers"]["X-Custom"] == "v1" and body["headers"]["Content-Length"] == "6"
    assert r.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]


def test_one_route_table_picks_routes_as_werkzeug_would(echo):
    """Where several routes take a path, C's one table prefers a literal
    segment, then an int, then a string; a route ending in a slash is
    reached from the path without it by a 308, query kept."""
    route = lambda path: requests.get(echo.url + path, timeout=5).json()["route"]
    assert route("/echo/fixed") == "/echo/fixed"
    assert route("/echo/42") == "/echo/<int:name>"
    assert route("/echo/word") == "/echo/<name>"
    assert requests.get(echo.url + "/tree/a/b%2Fc", timeout=5).json()["param_name"] == "a/b/c"
    moved = requests.get(echo.url + "/slash?x=1", timeout=5, allow_redirects=False)
    assert moved.status_code == 308 and moved.headers["Location"] == "/slash/?x=1"
    assert requests.get(echo.url + "/slash?x=1", timeout=5).json()["query_string"] == "x=1"


def test_error_bodies_are_json_whatever_the_request_id_holds(echo):
    """The error body escapes what it quotes (a client's request id); an id
    that is not printable ASCII is replaced, not echoed into logs and JSON."""
    quoted = requests.post(echo.url + "/raw", data=b"x" * 70000, headers={"X-Request-Id": 'a"b\\c'}, timeout=5)
    assert quoted.status_code == 413 and quoted.json()["request_id"] == 'a"b\\c'
    assert quoted.headers["X-Request-Id"] == 'a"b\\c'
    odd = requests.post(echo.url + "/raw", data=b"x" * 70000, headers={"X-Request-Id": "a b"}, timeout=5)
    assert odd.json()["request_id"] != "a b" and odd.json()["request_id"].split("-")[1].startswith("c")


def test_binary_bodies_and_large_responses(echo):
    payload = bytes(range(256)) * 100
    r = requests.post(echo.url + "/raw", data=payload, timeout=5)
    assert r.content == payload and r.headers["Content-Type"] == "application/octet-stream"
    big = requests.get(echo.url + "/big", params={"kb": 4096}, timeout=10)
    assert len(big.content) == 4096 * 1024 and set(big.content) == {ord("x")}
    head = requests.head(echo.url + "/big", params={"kb": 8}, timeout=5)
    assert head.status_code == 200 and head.content == b"" and head.headers["Content-Length"] == str(8 * 1024)


def test_routing_errors_and_limits(echo):
    assert requests.delete(echo.url + "/echo/x", timeout=5).status_code == 405
    assert requests.get(echo.url + "/users/x", timeout=5).status_code == 404
    assert requests.get(echo.url + "/users/7", timeout=5).text == "user 7\n"
    too_big = requests.post(echo.url + "/raw", data=b"x" * 70000, timeout=5)
    assert too_big.status_code == 413 and too_big.json()["error"] == "request body too large"

    def chunks():
        for _ in range(70):
            yield b"y" * 1000

    assert requests.post(echo.url + "/raw", data=chunks(), timeout=5).status_code == 413
    huge_header = requests.get(echo.url + "/echo/x", headers={"X-Big": "z" * 9000}, timeout=5)
    assert huge_header.status_code in (400, 431)
    assert "[module=echo route=/users/<int:id> req=" in echo.output() and "looked up user 7" in echo.output()
    if echo.path == "fast":  # the access log
        logged(echo, '"GET /users/7 HTTP/1.1" 200')
    else:
        assert '"GET /users/7 HTTP/1.1" 200' not in echo.output()


@pytest.fixture
def faults(serve, tmp_path):
    app = write_app(tmp_path / "faults", FAULTS_APP, copy=("faults.c", "initfail.c"))
    return serve(app, workers=1, threads=4, data_files=("fail-init",))


def worker_pid(server) -> int:
    return int(requests.get(server.url + "/ok", timeout=5).text.split()[-1])


def wait_for_new_worker(server, old_pid: int, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = worker_pid(server)
            if pid != old_pid:
                return pid
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"worker {old_pid} was not replaced:\n{server.output()}")


@pytest.mark.parametrize("path,signal_name", [("/segv", "SIGSEGV"), ("/fpe", "SIGFPE"), ("/overflow", "SIGSEGV")])
def test_crashing_handler_gets_500_and_worker_is_recycled(faults, path, signal_name):
    pid = worker_pid(faults)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        in_flight = pool.submit(requests.get, faults.url + "/slow", timeout=10)
        time.sleep(0.05)
        r = requests.get(faults.url + path, headers={"X-Request-Id": "crash-1"}, timeout=10)
        assert in_flight.result().text == "slow done\n", "a request in flight beside the crash is not lost"
    assert r.status_code == 500
    assert r.json() == {"error": f"handler {path[1:]} crashed ({signal_name})", "module": "faults",
                        "route": path, "request_id": "crash-1"}
    assert wait_for_new_worker(faults, pid) != pid
    logged(faults, f"[module=faults route={path} req=crash-1] handler {path[1:]} crashed with {signal_name}")


def test_handlers_that_block_hold_their_own_connections_not_the_others(faults):
    """The fast path keeps as many threads on its epoll set as there are CPUs;
    while all of them block in long calls, more of the worker's threads join
    (here 3 blocked calls of 1.5 s on a worker of 4 threads)."""
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        started = time.monotonic()
        blocked = [pool.submit(requests.get, faults.url + "/slow?ms=1500", timeout=10) for _ in range(3)]
        time.sleep(0.05)
        assert requests.get(faults.url + "/ok", timeout=10).ok
        answered = time.monotonic() - started
        assert all(b.result().text == "slow done\n" for b in blocked)
    assert answered < 1.4, f"/ok waited {answered:.2f} s behind the blocked calls"


def test_looping_handler_gets_504_and_worker_is_recycled(faults):
    pid = worker_pid(faults)
    start = time.monotonic()
    r = requests.get(faults.url + "/loop", timeout=10)
    assert r.status_code == 504 and "did not answer within 500 ms" in r.json()["error"]
    assert time.monotonic() - start < 5
    wait_for_new_worker(faults, pid)


def test_deadline_inside_malloc_never_freezes_the_worker(faults):
    """A handler that lives in malloc/free: the deadline waits until the
    thread is back in module code, so no allocator lock is left held and
    every request is answered (before, 4 of 11 hung for 60 s)."""
    def get(path):
        return requests.get(faults.url + path, timeout=10).status_code

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        churns = [pool.submit(get, "/churn") for _ in range(11)]
        oks = [pool.submit(get, "/ok") for _ in range(20)]
        assert [f.result() for f in churns] == [504] * 11
        assert [f.result() for f in oks] == [200] * 20
    assert time.monotonic() - start < 20
    logged(faults, "handler churn ran past its 100 ms limit")


def test_handler_stuck_outside_its_code_is_answered_by_the_watchdog(faults):
    pid = worker_pid(faults)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        start = time.monotonic()
        stuck = pool.submit(requests.get, faults.url + "/stuck", headers={"X-Request-Id": "stuck-1"}, timeout=10)
        time.sleep(0.05)
        assert worker_pid(faults) == pid, "the worker's other threads keep answering"
        r = stuck.result()
    assert r.status_code == 504 and r.json()["request_id"] == "stuck-1"
    assert time.monotonic() - start < 4
    logged(faults, "handler stuck is stuck past its 200 ms limit outside the module's code")
    wait_for_new_worker(faults, pid)


def test_workers_are_bounded_by_requests_and_memory(serve, tmp_path):
    """limits: from the manifest: a leaking worker is replaced once it passes
    max_rss, any worker after max_requests (plus up to 10%); no request fails."""
    app = write_app(tmp_path / "bounded", """\
        limits: {max_requests: 150, max_rss: 80MiB}
        modules:
          faults:
            source: modules/faults.c
            routes:
              - {path: /ok, handler: ok}
              - {path: /leak, handler: leak}
        """, copy=("faults.c",))
    server = serve(app, workers=1, threads=2)
    served = []
    for _ in range(200):
        r = requests.get(server.url + "/leak", timeout=10)
        assert r.status_code == 200
        served.append(int(r.text.split()[-1]))
    per_worker = [len(list(group)) for _, group in itertools.groupby(served)]
    assert len(per_worker) >= 2 and max(per_worker) < 140, \
        f"a worker leaking 1 MiB a request is replaced near 80 MiB, long before max_requests: {per_worker}"
    assert "over its 80 MiB ceiling (limits.max_rss)" in server.output()
    served = [int(requests.get(server.url + "/ok", timeout=10).text.split()[-1]) for _ in range(400)]
    runs = [len(list(group)) for _, group in itertools.groupby(served)]
    assert len(runs) >= 3 and max(runs[1:-1]) <= 165, runs


def test_handler_error_gets_500_and_is_logged(faults):
    r = requests.get(faults.url + "/fail", timeout=5)
    assert r.status_code == 500 and r.json()["error"] == "handler fail failed"
    assert "refusing on purpose" in faults.output()


def test_module_failing_in_worker_answers_503_and_others_keep_serving(faults):
    r = requests.get(faults.url + "/fragile", timeout=5)
    assert r.status_code == 503
    assert r.json()["module"] == "fragile"
    assert "hp_init returned -1 (HP_ERROR)" in r.json()["error"]
    assert requests.get(faults.url + "/ok", timeout=5).status_code == 200
    health = requests.get(faults.url + "/_hotplate/health", timeout=5)
    assert health.status_code == 503 and health.json()["failed_modules"] == ["fragile"]
    assert "cannot reach the database (test)" in faults.output()


def test_a_module_built_for_an_older_abi_still_loads(serve, tmp_path):
    """The function table only grows: a module that recorded ABI 2 (before
    the cookie and query iteration calls) loads and serves as it did."""
    app = write_app(tmp_path / "old", """\
        modules:
          old:
            source: old.c
            routes:
              - {path: /old, handler: old}
        """, {"old.c": """\
        #include <hotplate.h>
        #undef HP_ABI_VERSION
        #define HP_ABI_VERSION 2
        HP_MODULE;
        HP_EXPORT int old(hp_request *req, hp_response *res) {
            return hp_res_printf(res, "abi %u, table has ABI 3: %d\\n", (unsigned)hp_module_abi,
                                 (int)HP_API_HAS(res_set_cookie));
        }
        """})
    server = serve(app)
    assert requests.get(server.url + "/old", timeout=5).text == "abi 2, table has ABI 3: 1\n"


def test_slow_clients_cost_a_descriptor_not_a_thread(serve, tmp_path):
    """300 clients that never finish their headers (slowloris), on 1 worker
    with 4 threads: everyone else is still served; the slow ones are dropped
    after header_timeout; a body that stops coming gets 408 after body_timeout."""
    app = write_app(tmp_path / "echo", ECHO_APP, copy=("echo.c",))
    server = serve(app, workers=1, threads=4, extra_env={"HOTPLATE_HEADER_TIMEOUT": "3", "HOTPLATE_BODY_TIMEOUT": "1"})
    host, port = server.url.removeprefix("http://").split(":")
    slow = [socket.create_connection((host, int(port)), timeout=10) for _ in range(300)]
    try:
        for s in slow:
            s.sendall(b"GET /users/1 HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        for i in range(20):
            assert requests.get(f"{server.url}/users/{i}", timeout=5).text == f"user {i}\n"
        started = time.monotonic()
        assert slow[0].recv(1) == b""  # dropped by the server, not by our 10 s timeout
        assert time.monotonic() - started < 9
    finally:
        for s in slow:
            s.close()
    stalled = raw_exchange(server.url, b"POST /raw HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab", b"}")
    assert stalled.startswith(b"HTTP/1.1 408") and b"did not arrive in time" in stalled


def test_what_is_not_a_module_route_goes_to_python_and_the_connection_comes_back_to_c(echo):
    """Module routes are C's; a reserved path after one, pipelined on the same
    connection, goes to Python with the bytes read, and the module route
    after it is C's again. One route table answers with werkzeug's rules:
    parameters as werkzeug gives them (int: 007 is 7), slashes merged with
    a 308, a method the path does not take with a 405 and its Allow."""
    three = (b"GET /users/007 HTTP/1.1\r\nHost: x\r\n\r\nGET /_hotplate/release HTTP/1.1\r\nHost: x\r\n\r\n"
             b"GET /users/6 HTTP/1.1\r\nHost: x\r\n\r\n")
    got = raw_exchange(echo.url, three, b"user 6\n")
    first, second, third = got.split(b"HTTP/1.1 200")[1:]
    assert first.endswith(b"user 7\n") and b'"release"' in second and third.endswith(b"user 6\n")
    server_of = lambda part: part.split(b"Server: ")[1].split(b"\r\n")[0]
    assert server_of(first) == b"hotplate" and server_of(second) == b"gunicorn"
    assert server_of(third) == b"hotplate"  # C's again, on the connection it handed over
    assert requests.get(echo.url + "/users/x", timeout=5).status_code == 404  # not an int: not a module route
    merged = raw_exchange(echo.url, b"GET //users/5?a=1 HTTP/1.1\r\nHost: x\r\n\r\n", b"\0never")
    assert merged.startswith(b"HTTP/1.1 308") and b"Location: /users/5?a=1\r\n" in merged, merged  # werkzeug's rule
    wrong = requests.delete(echo.url + "/echo/x", timeout=5)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET, POST, PUT, HEAD", wrong.headers
    assert wrong.json()["error"] == "method DELETE is not allowed here; this path takes GET, POST, PUT, HEAD"


def test_a_retiring_worker_does_not_wait_for_slow_clients(serve, tmp_path):
    """A worker replaced after max_requests closes connections that have not
    sent a whole head after a short linger, not after header_timeout: a
    slow client cannot keep it (and its memory) alive."""
    app = write_app(tmp_path / "bounded", """\
        limits: {max_requests: 20}
        modules:
          faults:
            source: modules/faults.c
            routes:
              - {path: /ok, handler: ok}
        """, copy=("faults.c",))
    server = serve(app, workers=1, extra_env={"HOTPLATE_HEADER_TIMEOUT": "120"})
    host, port = server.url.removeprefix("http://").split(":")
    pid = worker_pid(server)
    slow = [socket.create_connection((host, int(port)), timeout=30) for _ in range(50)]
    try:
        for s in slow:
            s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        started = time.monotonic()
        for _ in range(25):
            requests.get(server.url + "/ok", timeout=10)
        wait_for_new_worker(server, pid, timeout=15)
        assert time.monotonic() - started < 15
        assert slow[0].recv(1) == b""  # closed by the retiring worker
    finally:
        for s in slow:
            s.close()


def test_a_draining_worker_still_answers_what_it_hands_to_python(serve, tmp_path):
    """A request the fast path hands to Python while the worker drains is
    answered, not dropped: here pipelined behind the request that reaches
    max_requests, so it meets the drain at once (no race with the 2 s
    after which idle connections close)."""
    app = write_app(tmp_path / "bounded", """\
        limits: {max_requests: 5}
        modules:
          faults:
            source: modules/faults.c
            routes:
              - {path: /ok, handler: ok}
        """, copy=("faults.c",))
    server = serve(app, workers=1)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as kept:
        kept.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"HTTP/1.1 200" in kept.recv(65536)
        with requests.Session() as s:  # 4 in all (limits of 5 have no jitter)
            for _ in range(3):
                assert s.get(server.url + "/ok", timeout=10).ok
        kept.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"  # the 5th: the drain starts as it is answered
                     b"GET /_hotplate/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := kept.recv(65536):
            answer += chunk
    first, _, second = answer.partition(b"HTTP/1.1 200 OK\r\nServer: gunicorn")
    assert first.startswith(b"HTTP/1.1 200") and second and b'"status"' in second, answer
    wait_for(lambda: "max_requests" in server.output(), 10, "the worker to drain")


def test_the_fast_path_survives_garbage(serve, tmp_path):
    """Hostile bytes at the fast path: random data, heads cut anywhere, bad
    chunked bodies, lying lengths, 2,000 headers. Every connection ends (an
    answer or a close), nothing crashes, and the same workers answer after."""
    app = write_app(tmp_path / "echo", ECHO_APP, copy=("echo.c",))
    server = serve(app, workers=1, extra_env={"HOTPLATE_MAX_BODY": "65536", "HOTPLATE_HEADER_TIMEOUT": "2",
                                              "HOTPLATE_BODY_TIMEOUT": "1"})
    pid = int(requests.get(server.url + "/_hotplate/release", timeout=5).json()["pid"])
    rnd = random.Random(1126)
    good = b"POST /raw HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    cases = [bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 600))) for _ in range(60)]
    cases += [good[:rnd.randint(1, len(good) - 1)] for _ in range(30)]
    cases += [b"POST /raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body for body in
              (b"zz\r\nx\r\n0\r\n\r\n", b"5\r\nhel", b"ffffffffffffffffff\r\n", b"3\nabc\n0\n\n", b"0\r\nX: y\r\n")]
    cases += [b"GET /users/1 HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
              b"GET /users/1 HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"GET /users/1 HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n",
              b"GET /users/1 HTTP/9.9\r\n\r\n", b"GET /users/1%00 HTTP/1.1\r\n\r\n", b"GET users/1 HTTP/1.1\r\n\r\n",
              b"GET /users/1 HTTP/1.1\r\n" + b"X-A: b\r\n" * 2000 + b"\r\n",
              b"GET /users/1 HTTP/1.1\r\n Folded: yes\r\n\r\n", b"\r\n\r\n\r\n", b"GET /users/" + b"9" * 5000 + b" HTTP/1.1\r\n\r\n"]
    host, port = server.url.removeprefix("http://").split(":")
    for case in cases:
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(case)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):  # until the server ends it
                pass
    assert requests.get(server.url + "/users/1", timeout=5).text == "user 1\n"
    assert int(requests.get(server.url + "/_hotplate/release", timeout=5).json()["pid"]) == pid, "a worker died"


def status_of(url: str, data: bytes, timeout: float = 5) -> int:
    """The status of the first answer to raw bytes, within ``timeout`` (0 if none came)."""
    try:
        got = raw_exchange(url, data, b"\r\n", timeout=timeout)
    except socket.timeout:
        return 0
    return int(got.split()[1]) if got.startswith(b"HTTP/1.") else 0


def test_framing_rules_are_the_same_on_every_path(echo):
    """RFC 9112's Transfer-Encoding rules, chunk sizes past the cap, and a
    bare LF: one answer, at once, whichever path serves the route (issue 19)."""
    post = b"POST /raw HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
    cases = {
        post + b"Transfer-Encoding: identity, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n": 501,
        post + b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n": 501,
        post + b"Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n": 400,
        post + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n": 400,
        post.replace(b"HTTP/1.1", b"HTTP/1.0") + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n": 400,
        post + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nhello": 413,
        post + b"Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello": 400,
        post + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n": 200,
        b"GET /users/5 HTTP/1.1\nHost: x\n\n": 400,
    }
    started = time.monotonic()
    got = {data: status_of(echo.url, data) for data in cases}
    assert got == cases, {k: v for k, v in got.items() if v != cases[k]}
    assert time.monotonic() - started < 5 * len(cases) / 2, "none waited for a timeout"
