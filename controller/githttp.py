"""git smart HTTP for the hosted repository, through ``git http-backend``.

So that ``git push http://hotplate:TOKEN@host:port/git/repo.git main`` works
with no SSH setup. The CGI's output is streamed, so the post-receive hook's
progress reaches the pusher as ``remote:`` lines while the deploy runs.
"""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from flask import Response, request

CHUNK = 64 * 1024


REPO = "repo.git"


def repo_path(path: str) -> str | None:
    """The backend's PATH_INFO for a request path under ``/git/``, or None
    unless it names something inside the hosted repository: no ``..``, no
    ``.``, no empty or absolute segment, so that nothing else of the state
    directory (the backend's project root) can be reached."""
    parts = path.split("/")
    if len(parts) < 2 or parts[0] != REPO or any(p in ("", ".", "..") for p in parts[1:]) or "\0" in path:
        return None
    return "/" + path


def pushes(path: str) -> bool:
    """Whether a smart-HTTP request is (part of) a push, not a fetch."""
    return path.endswith("/git-receive-pack") or request.args.get("service") == "git-receive-pack"


def http_backend(project_root: Path, path: str, user: str) -> Response:
    """Run one smart-HTTP request through ``git http-backend``.

    :param path: its PATH_INFO, from :func:`repo_path`.
    :param user: who asks (a token's name): the hooks see it as REMOTE_USER,
        and the push hook names it as the pusher.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
        "GIT_PROJECT_ROOT": str(project_root), "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": path, "REQUEST_METHOD": request.method, "QUERY_STRING": request.query_string.decode(),
        "CONTENT_TYPE": request.headers.get("Content-Type", ""), "REMOTE_USER": user,
        "REMOTE_ADDR": request.remote_addr or "", "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
        "HTTP_CONTENT_ENCODING": request.headers.get("Content-Encoding", ""),
    }
    for key in ("PYTHONPATH", "VIRTUAL_ENV"):
        if key in os.environ:
            env[key] = os.environ[key]
    if request.content_length is not None:
        env["CONTENT_LENGTH"] = str(request.content_length)
    proc = subprocess.Popen(["git", "http-backend"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    stream = request.stream
    threading.Thread(target=_feed, args=(stream, proc.stdin), daemon=True).start()
    status, headers = _cgi_headers(proc.stdout)
    return Response(_body(proc), status=status, headers=headers, direct_passthrough=True)


def _feed(source, sink) -> None:
    try:
        while chunk := source.read(CHUNK):
            sink.write(chunk)
    except (BrokenPipeError, OSError):
        pass
    finally:
        try:
            sink.close()
        except OSError:
            pass


def _cgi_headers(out) -> tuple[int, list[tuple[str, str]]]:
    status, headers = 200, []
    while line := out.readline().decode("latin-1").rstrip("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split()[0])
        else:
            headers.append((name.strip(), value.strip()))
    return status, headers


def _body(proc):
    try:
        while chunk := proc.stdout.read1(CHUNK):
            yield chunk
    finally:
        proc.stdout.close()
        proc.wait()
