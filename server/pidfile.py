"""The gunicorn master's pid file, ``run/server.pid``: written in place.

The master writes its own pid at start, into a file of fixed size that is
overwritten, never replaced: so a restart on a full disk (a module filled
the state's file system) needs no new block, and the master comes back.
The controller reads it to find (or adopt) the master.
"""
from __future__ import annotations

import os
from pathlib import Path

from .contract.report import pid_alive

#: Room for any pid, padded with spaces.
SIZE = 16


def write(path: Path, pid: int | None) -> None:
    """Put ``pid`` (None: no master) in the file, making it only if missing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(fd, (str(pid) if pid else "").ljust(SIZE).encode(), 0)
    finally:
        os.close(fd)


def read(path: Path) -> int | None:
    """The master's pid, if the file names one that lives."""
    try:
        pid = int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None
