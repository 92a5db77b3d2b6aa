"""The hosted repository's post-receive hook: each push's deploy, streamed
back to the pusher as ``remote:`` lines.

git runs it after a push updated refs: ``python -I -S pushhook.py
CONTROLLER_INFO TOKEN_FILE`` (the paths from server/contract/layout.py,
written into the hook by controller/source.py). It asks the running
controller to deploy (``POST /api/follow``) and prints each line of that
deploy's progress: validate, build per module with compiler output, roll,
verify, result. Pushes are accepted before the build: a commit that fails
to build stays on the branch, is reported failed, and live keeps serving
the last good release (docs/explanation/deploys.md).

Every push waits for this script to start before its last line can come,
so it runs as a bare interpreter and imports only ``_socket`` and ``_json``:
the hotplate package and ``http.client`` took 200 of the 230 ms it took to
start, and ``json`` (``re`` and its compiled patterns) 8.5 of the 16.5 ms
that were left (issue 23). It speaks HTTP/1.0, which the controller's API
answers with a body that ends where the connection does (controller/cli.py),
so there is nothing to decode but lines.
"""
import _json
import _socket
import os
import pwd
import sys

#: The line that ends a push's stream once its last line is said: a stream
#: that stops without it was cut (a controller killed mid-push), and the hook
#: says so instead of ending as if all were told (controller/push.py).
END = "\0hotplate: end"


def main(info_path: str, token_path: str) -> int:
    try:
        with open(info_path, encoding="utf-8") as f:
            info = load_json(f.read())
        with open(token_path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, ValueError, StopIteration):
        info, token = {}, ""
    branch_ref = f"refs/heads/{info.get('branch', 'main')}"
    for line in sys.stdin:
        old, new, ref = line.split()
        if ref != branch_ref:
            say(f"{ref} is not tracked (pushes to {branch_ref} deploy); nothing to do")
        elif set(new) == {"0"}:
            say(f"{ref} deleted; live keeps serving the release it serves (`hotplate status` names it)")
        elif not info.get("url"):
            say("the controller is not running; this commit deploys when `hotplate up` starts")
        else:
            follow(info["url"], token, new, pusher())
    return 0


class _Decoding:
    """What json's C scanner asks of its decoder (json.decoder.JSONDecoder's defaults)."""
    strict = True
    object_hook = object_pairs_hook = parse_constant = None
    parse_float, parse_int = float, int


def load_json(text: str) -> dict:
    """The controller's info (controller/cli.py writes it with json.dumps),
    read by json's own C scanner without importing json."""
    value, _ = _json.make_scanner(_Decoding())(text.strip(), 0)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def pusher() -> str:
    """Who pushed: the token's name over HTTP (controller/githttp.py sets
    REMOTE_USER), else the account that ran ``git push`` into the repository."""
    try:
        return os.environ.get("REMOTE_USER") or pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid-{os.getuid()}"


def say(line: str) -> None:
    print("hotplate: " + line, flush=True)


def follow(url: str, token: str, sha: str, who: str) -> None:
    """Print the lines of the deploy of ``sha`` until the stream's END line."""
    host, _, port = url.partition("://")[2].rstrip("/").rpartition(":")
    sock = _socket.socket(_socket.AF_INET6 if ":" in host else _socket.AF_INET, _socket.SOCK_STREAM)
    sock.settimeout(900)
    try:
        sock.connect((host.strip("[]"), int(port)))
        sock.sendall(f"POST /api/follow?commit={sha}&pusher={quote(who)} HTTP/1.0\r\nHost: {host}:{port}\r\n"
                     f"Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n".encode())
        head, body = b"", b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the connection closed before the answer's head")
            head += chunk
        head, _, body = head.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split(b" ", 2)
        if len(status) < 2 or status[1] != b"200":
            while chunk := sock.recv(65536):
                body += chunk
            say(f"the controller refused: {b' '.join(status[1:]).decode(errors='replace')} "
                f"{body.decode(errors='replace').strip()}")
            return
        while True:
            *lines, body = body.split(b"\n")
            for raw in lines:
                text = raw.decode(errors="replace")
                if text == END:
                    return
                say(text)
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the stream was cut before its end")
            body += chunk
    except (OSError, ValueError) as e:
        say(f"lost the controller at {url} mid-push ({type(e).__name__}: {e}); its outcome is not known "
            "here: see `hotplate status` and `hotplate history` (the commit deploys when the controller "
            "runs again)")
    finally:
        sock.close()


def quote(text: str) -> str:
    """``text`` for a query string (urllib.parse is more than this hook may import)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-._~@") else
                   "".join(f"%{b:02X}" for b in c.encode()) for c in text)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
