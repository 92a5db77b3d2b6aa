"""The account the app's workers run as (issue 9).

Started as root, hotplate runs module code (workers and the smoke check)
under an unprivileged account of its own, so that a module cannot read the
controller's token, history or repository, nor signal or trace its
processes. Started unprivileged, it cannot switch users: module code runs
as the controller's own user, and the README's trust model says what that
leaves open.
"""
from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

from hotplate.server.confine import set_dumpable
from hotplate.server.paths import PACKAGE_DIR

from .errors import HotplateError

DEFAULT_USER = "hotplate"


def worker_user(requested: str | None) -> str | None:
    """The workers' account: ``requested`` (made if missing), else
    :data:`DEFAULT_USER` when running as root, else None (no separation).

    :raises HotplateError: without root, for root itself, or when the
        account cannot reach the interpreter.
    """
    if os.geteuid() != 0:
        if requested:
            raise HotplateError(f"--user {requested}: switching the workers' account needs root; "
                                "start hotplate as root, or drop --user")
        return None
    name = ensure_account(requested or DEFAULT_USER)
    for path in interpreter_paths():
        check_reachable(name, path, "or use a Python others can read")
    return name


def keep_to_itself() -> None:
    """Mark this process not dumpable: no other process of its user (module
    code, when hotplate runs unprivileged) can read its memory or its
    /proc/PID/environ, where a webhook secret given by environment stays."""
    set_dumpable(False)


def ensure_account(name: str) -> str:
    """The account, made if missing: a system account with no home, no
    shell and a group of its own. Never root."""
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        result = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                                 "/nonexistent", "--shell", "/usr/sbin/nologin", name], capture_output=True, text=True)
        if result.returncode not in (0, 9):  # 9: made meanwhile by another process
            raise HotplateError(f"cannot create the workers' account {name!r} (useradd: {result.stderr.strip()}); "
                                "create it, or name another with --user")
        account = pwd.getpwnam(name)
    if account.pw_uid == 0:
        raise HotplateError(f"--user {name}: the workers' account must not be root (uid 0)")
    return name


def interpreter_paths() -> set[Path]:
    """What a worker loads from disk besides the release: Python and hotplate."""
    return {Path(sys.base_prefix), Path(sys.prefix), PACKAGE_DIR}


def check_reachable(user: str, path: Path, otherwise: str) -> None:
    """``user`` must be able to pass through every directory down to
    ``path``: raise naming the one that stops it, and what to do."""
    stop = blocking(user, path)
    if stop is not None:
        raise HotplateError(f"the workers' account {user} cannot reach {path}: {stop} is mode "
                            f"{stop.stat().st_mode & 0o777:o}; run `setfacl -m u:{user}:x {stop}` "
                            f"(or `chmod o+x {stop}`), {otherwise}")


def blocking(user: str, path: Path) -> Path | None:
    """The first directory on the way to ``path`` that ``user`` cannot pass, if any."""
    account = pwd.getpwnam(user)
    path = Path(path).resolve()
    for directory in (*reversed(path.parents), path):
        st = directory.stat()
        if not (st.st_mode & 0o001 or (st.st_uid == account.pw_uid and st.st_mode & 0o100)
                or (st.st_gid == account.pw_gid and st.st_mode & 0o010) or _acl_allows(directory, user)):
            return directory
    return None


def _acl_allows(directory: Path, user: str) -> bool:
    """Whether an ACL entry lets ``user`` pass (getfacl, from Debian's acl)."""
    try:
        out = subprocess.run(["getfacl", "--omit-header", "--absolute-names", str(directory)],
                             capture_output=True, text=True).stdout
    except OSError:
        return False
    return any(line.startswith(f"user:{user}:") and "x" in line.split(":")[2] for line in out.splitlines())


def main() -> int:
    """``python -m hotplate.controller.account``, which scripts/setup runs as
    root: make the workers' account and let it pass (an ACL entry, not a
    wider mode) each directory on the way to the interpreter that stops it,
    such as /root for a pyenv Python."""
    name = ensure_account(DEFAULT_USER)
    for path in interpreter_paths():
        while (stop := blocking(name, path)) is not None:
            subprocess.run(["setfacl", "-m", f"u:{name}:x", str(stop)], check=True)
            print(f"setup: let the workers' account {name} pass {stop} (setfacl -m u:{name}:x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
