"""The build sandbox: what a push's compiler may see.

The compiler sees the app's checkout (read-only), the system's toolchain,
headers and libraries, hotplate's own header, and its output directory:
nothing of the state directory (token, history, repository), no network,
no other file. So ``#include "/etc/shadow"`` or ``#include "../../token"``
fails as a missing file, and no compiler output can carry what it holds.

bubblewrap (Debian's ``bubblewrap``) does the containing. Where it is missing
or cannot make namespaces, builds are refused, unless the operator sets
``HOTPLATE_UNSANDBOXED_BUILDS=1``: then the compiler can read any file the
controller can (the ``cflags`` allowlist still keeps it from running anything
else).
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from .errors import RetryableError

#: What the toolchain needs from the system, read-only.
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/alternatives", "/etc/ld.so.cache")
UNSANDBOXED = "HOTPLATE_UNSANDBOXED_BUILDS"


@functools.lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why builds cannot be sandboxed here, or None if they can."""
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    probe = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-all", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"bubblewrap cannot make namespaces here: {probe.stderr.strip()}"
    return None


def wrap(cmd: list[str], cwd: Path, readable: list[Path], hidden: list[Path], writable: list[Path]) -> list[str]:
    """``cmd`` confined to the system, ``readable`` and ``writable``; each of
    ``hidden`` (inside a readable one) shows as an empty directory.

    :raises RetryableError: when no sandbox can be made and the operator has
        not allowed unsandboxed builds (fixing the host fixes the deploy).
    """
    why = unavailable()
    if why is not None:
        if os.environ.get(UNSANDBOXED) == "1":
            return cmd
        raise RetryableError(f"builds run in a sandbox and none can be made: {why}; or set {UNSANDBOXED}=1 to "
                             "compile without one (a push can then read any file the controller can)", "NoSandbox")
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
            "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            args += ["--ro-bind", path, path]
    for path in readable:
        args += ["--ro-bind", str(path), str(path)]
    for path in hidden:
        args += ["--tmpfs", str(path)]
    for path in writable:
        args += ["--bind", str(path), str(path)]
    return [*args, "--chdir", str(cwd), *cmd]
