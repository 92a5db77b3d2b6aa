"""Confine a process that runs module code: its account, resource limits and
system-call filter (issue 9).

Applied once, after fork and before any module is loaded, in gunicorn
workers (server/gunicorn_app.py) and in the controller's smoke check
(server/smoke.py): the same bounds wherever pushed C runs.
"""
from __future__ import annotations

import ctypes
import grp
import logging
import os
import pwd
import resource

from . import libhotplate
from .contract.release import ReleaseSpec

log = logging.getLogger("hotplate")

#: Limits applied when the manifest's ``limits:`` does not set them.
#: Processes are bounded only under a dedicated account: the kernel counts
#: them per user, and a shared account's other processes would count too.
DEFAULT_OPEN_FILES = 65536
DEFAULT_PROCESSES = 4096
CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x00020000, 0x4000, 1 << 18
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
#: Address space left for what threads reserve and never touch: 8 MiB of
#: stack each, and glibc's malloc arenas (64 MiB each, one per thread in use).
STACKS = 2 << 30
#: The group every app's account is in, for passage only: the directories on
#: the way to Python (such as /root for a pyenv Python) let it through
#: (scripts/setup), and no file is ever given to it.
PASSAGE_GROUP = "hotplate-apps"
_RLIMITS = (("address_space", resource.RLIMIT_AS), ("open_files", resource.RLIMIT_NOFILE),
            ("processes", resource.RLIMIT_NPROC))


def hide_other_processes() -> None:
    """Give this process (root, before it becomes the workers' account) a
    /proc of its own that shows only the processes it may trace: the
    controller's and the master's ``/proc/PID`` (command line, environment)
    are then not there at all. A mount namespace of its own, and procfs
    mounted again with ``hidepid=2``; nothing changes outside it.
    Logged, not fatal, where the kernel refuses (a container without
    CAP_SYS_ADMIN): the account already keeps the secrets out of reach."""
    libc = ctypes.CDLL(None, use_errno=True)
    steps = ((libc.unshare, (CLONE_NEWNS,)), (libc.mount, (b"none", b"/", None, MS_REC | MS_PRIVATE, None)),
             (libc.mount, (b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"hidepid=2")))
    for call, args in steps:
        if call(*args) != 0:
            log.warning("could not hide other processes from module code (%s: %s)", call.__name__,
                        os.strerror(ctypes.get_errno()))
            return


def die_with_parent(sig: int) -> None:
    """Have ``sig`` sent to this process when its parent dies. Set after
    any change of uid or gid, which clears it (prctl(2))."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, sig)


def set_dumpable(dumpable: bool) -> None:
    """Whether other processes of this user may read this one's memory and
    /proc/PID files (``PR_SET_DUMPABLE``; ptrace stays filtered anyway)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0)


def drop_groups() -> None:
    """Leave root's supplementary groups (they would still open group-readable
    files), keeping only the passage group."""
    try:
        os.setgroups([grp.getgrnam(PASSAGE_GROUP).gr_gid])
    except KeyError:
        os.setgroups([])


def become(user: str) -> None:
    """Switch this process (root) to ``user`` for good: its uid, its group
    and no supplementary group but the passage group."""
    account = pwd.getpwnam(user)
    drop_groups()
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)


def limits_for(spec: ReleaseSpec, dedicated: bool, max_rss: int | None = None) -> dict[int, int]:
    """Each resource's limit: the manifest's, else the default. Unless the
    manifest sets ``address_space``, ``max_rss`` bounds it: what the process
    maps now plus twice ``max_rss`` and room for threads' stacks and arenas, so that no
    single call can reserve the host's memory (its cgroup, where there is
    one, holds what it touches to less: server/cgroups.py)."""
    chosen = {"open_files": DEFAULT_OPEN_FILES, "processes": DEFAULT_PROCESSES if dedicated else None,
              "address_space": mapped_bytes() + 2 * max_rss + STACKS if max_rss else None}
    chosen.update({name: value for name in ("address_space", "open_files", "processes")
                   if (value := getattr(spec.limits, name)) is not None})
    return {res: chosen[name] for name, res in _RLIMITS if chosen.get(name) is not None}


def mapped_bytes() -> int:
    """This process's address space now (VmSize)."""
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmSize"))) * 1024


def confine(spec: ReleaseSpec, dedicated: bool, sanitized: bool = False, max_rss: int | None = None) -> None:
    """Set the resource limits (soft and hard: a module cannot raise them) and
    install the system-call filter, unless a module of the release opted out
    with a reason (``unconfined:``), which is logged.

    :param dedicated: whether the process runs under an account of its own.
    :param sanitized: a sanitizer build (dev only): no address-space limit
        and no filter (see server/sanitize.py).
    :param max_rss: the process's memory ceiling (see :func:`limits_for`).
    :raises OSError: when the filter cannot be installed.
    """
    limits = limits_for(spec, dedicated, max_rss)
    if sanitized:
        limits.pop(resource.RLIMIT_AS, None)
        log.warning("sanitizer build: no system-call filter and no address-space limit (dev only)")
    for res, value in limits.items():
        _, hard = resource.getrlimit(res)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(res, (value, value))
    unconfined = [m for m in spec.modules if m.unconfined]
    if sanitized:
        return
    if unconfined:
        for m in unconfined:
            log.warning("[module=%s] runs without the system-call filter: %s", m.name, m.unconfined)
        return
    ffi, lib = libhotplate.load()
    err = ffi.new("char[]", 256)
    if lib.hp_rt_confine(err, 256) != 0:
        raise OSError(ffi.string(err).decode(errors="replace"))
