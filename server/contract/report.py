"""What each worker tells the controller, through files in the run directory.

``<pid>.json``: the release this worker serves and each module's state,
written at boot, and marked retiring once it stops accepting connections.
``<pid>.stats``: request counters in a small shared memory file, updated on
every request and read by the controller's health gate and metrics without
asking the worker anything.

The directory is root's (when hotplate runs as root): the gunicorn master
makes both files for each worker it forks, before the worker drops root
(:func:`open_channel`), and the worker writes through the descriptors it
was given. So module code can neither make a file there (a forged worker, a
link, a FIFO) nor redirect one; it can only write garbage into its own
two, which readers take as that worker's fault (:func:`read_reports`). The
pid of a report is its file's name, which root chose, never what it says.

A report is only believed while its process lives: a worker killed with
SIGKILL (the OOM killer) leaves its files behind. The gunicorn master folds
the counters of every dead worker into ``exited.totals`` and removes its
files (:func:`fold_dead`), so crash, timeout and 5xx counts outlive the
workers that had them.
"""
from __future__ import annotations

import json
import logging
import mmap
import os
import re
import struct
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .. import untrusted

log = logging.getLogger("hotplate")

#: A worker's own counters, for ``status`` and the health gate (the
#: labelled metrics for Prometheus are server/metrics.py's).
FIELDS = ("requests", "errors_5xx", "crashes", "timeouts", "ws_opened", "ws_closed", "ws_moved_in", "ws_moved_out",
          "ws_messages")
REQUESTS, ERRORS_5XX, CRASHES, TIMEOUTS, WS_OPENED, WS_CLOSED, WS_MOVED_IN, WS_MOVED_OUT, WS_MESSAGES = \
    range(len(FIELDS))
_SIZE = 8 * len(FIELDS)
#: The largest report a reader takes (a release of many modules needs a few KiB).
MAX_REPORT = 64 * 1024
#: What root allocates for a report before the worker writes it (a typical one is under 1 KiB).
REPORT_SPACE = 16 * 1024
_NAME = re.compile(r"([1-9][0-9]{0,9})\.(json|stats)")
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Counters:
    """Monotonic counters, in memory or in a worker's shared file (one writer: that worker)."""

    def __init__(self, fd: int | None = None):
        self.values = [0] * len(FIELDS)
        self.buf = bytearray(_SIZE) if fd is None else mmap.mmap(fd, _SIZE)

    def add(self, field: int, n: int = 1) -> None:
        self.values[field] += n
        struct.pack_into("<Q", self.buf, field * 8, self.values[field])


def _counters(data: bytes | None) -> dict[str, int]:
    if data is None or len(data) != _SIZE:
        return dict.fromkeys(FIELDS, 0)
    return dict(zip(FIELDS, struct.unpack(f"<{len(FIELDS)}Q", data)))


#: The version of the ``<pid>.json`` layout; a reader skips reports of another.
FORMAT = 1


@dataclass(frozen=True)
class ModuleReport:
    """One module as a worker loaded it."""

    name: str
    ok: bool
    error: str | None = None


def _cut(text: str | None, room: int) -> str | None:
    return text if text is None or len(text) <= room else text[:room] + " … (cut: see `hotplate logs --app`)"


@dataclass(frozen=True)
class Report:
    """What one worker says of itself.

    :param hub: whether it takes WebSocket connections and publications from
        other workers (server/websocket/).
    :param retiring: whether it has stopped accepting connections for good.
    :param counters: its request counters (read from ``<pid>.stats``, not stored).
    """

    pid: int
    release: str | None
    modules: tuple[ModuleReport, ...]
    error: str | None
    booted_at: float
    retiring: bool = False
    hub: bool = False
    counters: dict = field(default_factory=dict, compare=False)

    def encode(self) -> bytes:
        """The report as its file holds it, always within what a reader takes
        (:data:`MAX_REPORT`): long errors (a module's log lines, many modules)
        are cut to fit, never the report lost."""
        data = {"format": FORMAT, **asdict(self)}
        del data["counters"]
        raw = json.dumps(data).encode()
        if len(raw) > MAX_REPORT:
            room = MAX_REPORT // (8 * (len(self.modules) + 1))  # (JSON may write a character as 6 bytes)
            data["error"] = _cut(data["error"], room)
            for m in data["modules"]:
                m["error"] = _cut(m["error"], room)
            raw = json.dumps(data).encode()
        return raw

    @classmethod
    def parse(cls, pid: int, data: bytes) -> "Report":
        """A report as its worker wrote it, believed only as far as it goes:
        the pid is the file's, and anything malformed is the worker's fault.

        :raises ValueError: saying what is wrong with it."""
        try:
            d = json.loads(data)
            if d.get("format") != FORMAT:
                raise ValueError(f"format {d.get('format')!r}, not {FORMAT}")
            release, error = d.get("release"), d.get("error")
            modules = tuple(ModuleReport(str(m["name"]), bool(m["ok"]), None if m.get("error") is None
                                         else str(m["error"])) for m in d["modules"])
            if not (release is None or isinstance(release, str)) or not (error is None or isinstance(error, str)):
                raise ValueError("release and error are text")
            return cls(pid, release, modules, error, float(d["booted_at"]), bool(d.get("retiring")),
                       bool(d.get("hub")))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"worker {pid} wrote a report hotplate cannot read ({type(e).__name__}: {e})") from None


class Channel:
    """A worker's two files, made for it by root (:func:`open_channel`); the
    worker writes its report through :meth:`publish` and :meth:`retire`."""

    def __init__(self, report_fd: int, stats_fd: int):
        self.report_fd, self.stats_fd = report_fd, stats_fd
        self.last: Report | None = None

    def publish(self, release: str | None, modules: list[ModuleReport], error: str | None = None,
                hub: bool = False) -> None:
        """Write this worker's boot report."""
        self.write(Report(os.getpid(), release, tuple(modules), error, time.time(), hub=hub))

    def retire(self) -> None:
        """Mark this worker as no longer accepting connections (it drains, then exits)."""
        if self.last is not None:
            self.write(replace(self.last, retiring=True))

    def write(self, report: Report) -> None:
        """Overwrite the report in place (no new file: the directory is not
        the worker's). Padded with spaces to the old length, which JSON
        ignores; a reader that meets a half-written one reads it again later."""
        self.last = report
        data = report.encode()
        os.pwrite(self.report_fd, data.ljust(os.fstat(self.report_fd).st_size), 0)

    def counters(self) -> Counters:
        return Counters(self.stats_fd)


def open_channel(directory: Path, pid: int) -> Channel:
    """Make worker ``pid``'s report and counter files and open them, in the
    new worker before it drops root (gunicorn's post_fork): each made anew
    (``O_EXCL``, never through a link), the counters' space allocated now,
    so a full disk later cannot fault the shared page."""
    dfd = untrusted.open_dir(directory)
    try:
        fds = []
        for suffix in (".json", ".stats"):
            name = f"{pid}{suffix}"
            _unlink(dfd, name)  # a dead worker's, of the same pid, that no fold saw
            fds.append(os.open(name, _CREATE, 0o644, dir_fd=dfd))
        os.posix_fallocate(fds[1], 0, _SIZE)
        try:
            os.posix_fallocate(fds[0], 0, REPORT_SPACE)  # the worker's writes then need no new blocks
        except OSError:
            pass  # (a full disk: the worker reports if it can)
        return Channel(*fds)
    finally:
        os.close(dfd)


def _unlink(dfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass


def _exists(dfd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dfd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


TOTALS = "exited.totals"
#: How many folded pids the totals remember (readers skip their reports).
_FOLDED_PIDS = 4096


def _files(dfd: int) -> dict[int, set[str]]:
    """Worker files by pid; names that are not a worker's file are ignored."""
    out: dict[int, set[str]] = {}
    for name in os.listdir(dfd):
        if m := _NAME.fullmatch(name):
            out.setdefault(int(m[1]), set()).add(m[2])
    return out


def _read_totals(dfd: int) -> dict:
    try:
        data = json.loads(untrusted.read(dfd, TOTALS, 1 << 20) or b"{}")
        return {"counters": {f: int(data["counters"].get(f, 0)) for f in FIELDS},
                "pids": [int(p) for p in data["pids"]]}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {"counters": dict.fromkeys(FIELDS, 0), "pids": []}


def fold_dead(directory: Path) -> None:
    """Add the counters of dead workers to the totals and remove their files.
    The master alone calls this (one writer); totals are written before the
    files go, and readers skip reports of pids the totals already cover.
    Never raises: a full disk keeps the files for the next fold."""
    try:
        dfd = untrusted.open_dir(directory)
    except OSError as e:
        log.error("cannot fold the counters of exited workers: %s", e)
        return
    try:
        dead = [pid for pid in _files(dfd) if not pid_alive(pid)]
        if not dead:
            return
        totals = _read_totals(dfd)
        for pid in sorted(dead):
            if pid not in totals["pids"]:
                for name, n in _read_counters(dfd, pid).items():
                    totals["counters"][name] += n
                totals["pids"].append(pid)
        totals["pids"] = totals["pids"][-_FOLDED_PIDS:]
        try:
            _write_totals(dfd, json.dumps(totals).encode())
        except OSError as e:
            log.error("cannot write the exited workers' totals (%s); trying again at the next exit", e)
            return
        for pid in dead:
            for suffix in (".json", ".stats"):
                _unlink(dfd, f"{pid}{suffix}")
    finally:
        os.close(dfd)


def _write_totals(dfd: int, data: bytes) -> None:
    tmp = f".{TOTALS}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, TOTALS, src_dir_fd=dfd, dst_dir_fd=dfd)


def _read_counters(dfd: int, pid: int) -> dict[str, int]:
    try:
        return _counters(untrusted.read(dfd, f"{pid}.stats", _SIZE))
    except untrusted.Unreadable:
        return dict.fromkeys(FIELDS, 0)


def pid_alive(pid: int, parent: int | None = None) -> bool:
    """Whether a process (a worker, the server) still runs, and is a child
    of ``parent`` if given: a zombie does not run."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        if parent is None:
            return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return parent is None
    return fields[0] != "Z" and (parent is None or fields[1] == str(parent))


def read_reports(directory: Path, parent: int | None = None) -> dict[int, Report]:
    """The report of every live worker, by pid (dead workers' files are
    ignored, and so is a worker that has not reported yet), only of the
    children of ``parent`` if given. A report that cannot be read is the
    worker's fault: it shows as a worker serving nothing, with the reason
    as its error."""
    try:
        dfd = untrusted.open_dir(directory)
    except OSError:
        return {}
    try:
        return {pid: r for pid in _files(dfd) if (r := _read_one(dfd, pid, parent)) is not None}
    finally:
        os.close(dfd)


def _read_one(dfd: int, pid: int, parent: int | None) -> Report | None:
    if not pid_alive(pid, parent):
        return None
    try:
        data = untrusted.read(dfd, f"{pid}.json", MAX_REPORT)
        if not data or not data.strip(b" \t\r\n\0"):
            return None  # booting: root made (and allocated) the file, the worker has not written it yet
        try:
            report = Report.parse(pid, data)
        except ValueError:
            report = Report.parse(pid, untrusted.read(dfd, f"{pid}.json", MAX_REPORT) or b"")  # half-written?
    except (untrusted.Unreadable, ValueError) as e:
        report = Report(pid, None, (), str(e), 0.0)
    return replace(report, counters=_read_counters(dfd, pid))


def read_all(directory: Path) -> tuple[dict[int, Report], dict[str, int]]:
    """Live workers' reports and the exited workers' counter totals, each
    worker counted once even while the master folds it."""
    reports = read_reports(directory)
    try:
        dfd = untrusted.open_dir(directory)
    except OSError:
        return reports, dict.fromkeys(FIELDS, 0)
    try:
        totals = _read_totals(dfd)
    finally:
        os.close(dfd)
    folded = set(totals["pids"])
    return {pid: r for pid, r in reports.items() if pid not in folded}, totals["counters"]


def worker_pids(directory: Path) -> set[int]:
    """The pids that have report files (live or not yet folded)."""
    try:
        dfd = untrusted.open_dir(directory)
    except OSError:
        return set()
    try:
        return set(_files(dfd))
    finally:
        os.close(dfd)


def is_worker(directory: Path, pid: int) -> bool:
    """Whether ``pid`` is a worker of the master that owns ``directory``:
    only that master makes files there (read by workers, to check a peer)."""
    try:
        dfd = untrusted.open_dir(directory)
    except OSError:
        return False
    try:
        return _exists(dfd, f"{pid}.json")
    finally:
        os.close(dfd)
