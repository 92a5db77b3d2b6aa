"""Reading, as root, files that module code can write.

A worker writes its own report and counters, and module code writes the
app's data. Root (the controller, the gunicorn master) reads some of them,
and must never follow a link planted there, block on a FIFO or a device, or
read more than it expects. Every such read goes through :func:`read`: open
relative to a directory descriptor with ``O_NOFOLLOW | O_NONBLOCK``, check
for a regular file of bounded size, read it in one go. What comes back is
bytes to parse as untrusted: a reader treats anything it cannot parse as
that writer's fault, never as its own crash.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Unreadable(ValueError):
    """A file that is there but is not a regular file of the expected size."""


def open_dir(path: Path) -> int:
    """A descriptor of directory ``path`` (itself not a link), for :func:`read`."""
    return os.open(path, _DIR)


def read(directory: int, name: str, limit: int) -> bytes | None:
    """The whole of file ``name`` in ``directory`` (a descriptor), or None
    if it does not exist.

    :raises Unreadable: for a link, a FIFO, a device, a directory or a file
        over ``limit`` bytes, saying which.
    """
    if "/" in name or name in (".", ".."):
        raise Unreadable(f"{name!r} is not a file name")
    try:
        fd = os.open(name, _FILE, dir_fd=directory)
    except FileNotFoundError:
        return None
    except OSError as e:  # ELOOP: a symbolic link
        raise Unreadable(f"{name} cannot be opened safely ({os.strerror(e.errno)})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable(f"{name} is not a regular file")
        if st.st_size > limit:
            raise Unreadable(f"{name} is {st.st_size} bytes, over the {limit} expected")
        data = os.read(fd, limit + 1)
        if len(data) > limit:
            raise Unreadable(f"{name} grew past the {limit} bytes expected")
        return data
    finally:
        os.close(fd)


def read_path(path: Path, limit: int) -> bytes | None:
    """:func:`read` for one path (the last component is not followed)."""
    fd = open_dir(Path(path).parent)
    try:
        return read(fd, Path(path).name, limit)
    finally:
        os.close(fd)
