"""The account the app's workers run as (issues 9 and 19).

Started as root, hotplate runs module code (workers, the smoke check, jobs)
under an unprivileged account of the app's own, so that a module cannot
read the controller's token, history or repository, nor signal or trace
its processes; and since each state directory (each app) gets another
account, ``hp-NAME-HASH``, nor another app's data, secrets or processes.
Every such account is in one group more, :data:`PASSAGE_GROUP`, which only
lets it pass the directories on the way to Python (scripts/setup grants
it). ``--user NAME`` names an account instead; a second state directory on
an account that one already uses is refused unless ``--share-user`` says
so (a claim per account in :data:`CLAIMS`). Started unprivileged, hotplate
cannot switch users: module code runs as the controller's own user, and the
The trust model (docs/explanation/trust-model.md) says what that leaves open.
"""
from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

from hotplate.server.confine import PASSAGE_GROUP, set_dumpable
from hotplate.server.paths import PACKAGE_DIR

from .errors import HotplateError

#: The account scripts/setup makes (and the one tests run an unprivileged controller as).
SETUP_USER = "hotplate"
#: The ids app accounts take: a range of their own, not the few system ids
#: (one account per state directory adds up), nor systemd's dynamic users'.
ID_RANGE = ("-K", "SYS_UID_MIN=40000", "-K", "SYS_UID_MAX=59999", "-K", "SYS_GID_MIN=40000", "-K", "SYS_GID_MAX=59999")
#: Which state directory uses which account: one file per account, holding the directory.
CLAIMS = Path("/var/lib/hotplate/accounts")


def worker_user(requested: str | None, root: Path, share: bool = False) -> str | None:
    """The workers' account for the state directory ``root``: ``requested``
    (made if missing), else one of this directory's own (:func:`app_account`)
    when running as root, else None (no separation).

    :raises HotplateError: without root, for root itself, for an account
        another state directory uses (unless ``share``), or when the
        account cannot reach the interpreter.
    """
    if os.geteuid() != 0:
        if requested:
            raise HotplateError(f"--user {requested}: switching the workers' account needs root; "
                                "start hotplate as root, or drop --user")
        return None
    name = ensure_account(requested or app_account(root))
    claim(name, Path(root).resolve(), share)
    for path in interpreter_paths():
        check_reachable(name, path, "or use a Python others can read")
    return name


def app_account(root: Path) -> str:
    """The account of state directory ``root``: ``hp-`` and a short name
    (the directory's, or its parent's for a hidden one such as ``.hotplate``)
    and a digest of its path, so two apps never share one."""
    root = Path(root).resolve()
    named = root.parent if root.name.startswith(".") else root
    slug = re.sub(r"[^a-z0-9]", "", named.name.lower())[:12] or "app"
    return f"hp-{slug}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"


def claim(name: str, root: Path, share: bool) -> None:
    """Record that ``root`` runs its module code as ``name``.

    :raises HotplateError: if another state directory that still exists
        claims it, unless ``share``."""
    CLAIMS.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = CLAIMS / name
    try:
        other = Path(path.read_text().strip())
    except (OSError, ValueError):
        other = None
    if other and other != root and other.is_dir() and not share:
        raise HotplateError(f"the account {name} runs the module code of {other} already: the module code of "
                            f"either app could then read the other's data and secrets and signal its processes; "
                            f"drop --user (each state directory gets an account of its own), name another, or pass "
                            "--share-user if both apps trust each other")
    if other != root:
        path.write_text(f"{root}\n")


def keep_to_itself() -> None:
    """Mark this process not dumpable: no other process of its user (module
    code, when hotplate runs unprivileged) can read its memory or its
    /proc/PID/environ, where a webhook secret given by environment stays."""
    set_dumpable(False)


def ensure_account(name: str) -> str:
    """The account, made if missing: a system account with no home, no
    shell and a group of its own, in the passage group. Never root."""
    ensure_group(PASSAGE_GROUP)
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        result = subprocess.run(["useradd", "--system", *ID_RANGE, "--user-group", "--no-create-home", "--home-dir",
                                 "/nonexistent", "--shell", "/usr/sbin/nologin", "--groups", PASSAGE_GROUP, name],
                                capture_output=True, text=True)
        if result.returncode not in (0, 9):  # 9: made meanwhile by another process
            raise HotplateError(f"cannot create the workers' account {name!r} (useradd: {result.stderr.strip()}); "
                                "create it, or name another with --user")
        account = pwd.getpwnam(name)
    if account.pw_uid == 0:
        raise HotplateError(f"--user {name}: the workers' account must not be root (uid 0)")
    if name not in grp.getgrnam(PASSAGE_GROUP).gr_mem:
        subprocess.run(["usermod", "--append", "--groups", PASSAGE_GROUP, name], capture_output=True, check=False)
    return name


def ensure_group(name: str) -> None:
    try:
        grp.getgrnam(name)
    except KeyError:
        result = subprocess.run(["groupadd", "--system", name], capture_output=True, text=True)
        if result.returncode not in (0, 9):
            raise HotplateError(f"cannot create the group {name!r} (groupadd: {result.stderr.strip()}); create it")


def groups_of(user: str) -> set[int]:
    """The gids a process of ``user`` runs with: its own and the passage group
    (server/confine.py: the others are dropped)."""
    account = pwd.getpwnam(user)
    gids = {account.pw_gid}
    try:
        gids.add(grp.getgrnam(PASSAGE_GROUP).gr_gid)
    except KeyError:
        pass
    return gids


def interpreter_paths() -> set[Path]:
    """What a worker loads from disk besides the release: Python and hotplate."""
    return {Path(sys.base_prefix), Path(sys.prefix), PACKAGE_DIR}


def check_reachable(user: str, path: Path, otherwise: str) -> None:
    """``user`` must be able to pass through every directory down to
    ``path``: raise naming the one that stops it, and what to do."""
    stop = blocking(user, path)
    if stop is not None:
        raise HotplateError(f"the workers' account {user} cannot reach {path}: {stop} is mode "
                            f"{stop.stat().st_mode & 0o777:o}; run `setfacl -m g:{PASSAGE_GROUP}:x {stop}` "
                            f"(or `chmod o+x {stop}`; scripts/setup does the first), {otherwise}")


def blocking(user: str | None, path: Path) -> Path | None:
    """The first directory on the way to ``path`` that ``user`` cannot pass,
    if any; with no user, that the passage group alone cannot."""
    uid = pwd.getpwnam(user).pw_uid if user else None
    gids = groups_of(user) if user else {grp.getgrnam(PASSAGE_GROUP).gr_gid}
    names = {grp.getgrgid(g).gr_name for g in gids}
    path = Path(path).resolve()
    for directory in (*reversed(path.parents), path):
        st = directory.stat()
        if not (st.st_mode & 0o001 or (st.st_uid == uid and st.st_mode & 0o100)
                or (st.st_gid in gids and st.st_mode & 0o010) or _acl_allows(directory, user, names)):
            return directory
    return None


def _acl_allows(directory: Path, user: str | None, groups: set[str]) -> bool:
    """Whether an ACL entry lets ``user`` (or one of its ``groups``) pass (getfacl, from Debian's acl)."""
    try:
        out = subprocess.run(["getfacl", "--omit-header", "--absolute-names", str(directory)],
                             capture_output=True, text=True).stdout
    except OSError:
        return False
    entries = [line.split(":") for line in out.splitlines() if line.count(":") == 2]
    return any("x" in perms and (kind == "user" and who == user or kind == "group" and who in groups)
               for kind, who, perms in entries)


def main() -> int:
    """``python -m hotplate.controller.account``, which scripts/setup runs as
    root: make the passage group (and the account tests use), and let the
    group pass (an ACL entry, not a wider mode) each directory on the way to
    the interpreter that stops it, such as /root for a pyenv Python."""
    ensure_account(SETUP_USER)
    for path in interpreter_paths():
        while (stop := blocking(None, path)) is not None:
            subprocess.run(["setfacl", "-m", f"g:{PASSAGE_GROUP}:x", str(stop)], check=True)
            print(f"setup: let the group {PASSAGE_GROUP} pass {stop} (setfacl -m g:{PASSAGE_GROUP}:x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
