"""Smoke check: load a release in a throwaway process before it may go live.

:func:`check` loads every module, checks its ABI and handler symbols, runs
hp_init and hp_fini, and lists ``{"module", "source", "error"}`` for each
failure. It runs in a child of the controller's fork server
(controller/release.py), or as ``python -m hotplate.server.smoke RELEASE_DIR
WORKDIR USER CONFIG_DIR`` (empty strings for none), which prints that list as JSON (a sanitizer build, whose
runtime must be preloaded into a fresh interpreter). A module that kills the process fails the release,
not a server.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .confine import become, confine, hide_other_processes
from .contract import ReleaseSpec
from .modules import ModuleSet, load_config, open_store, setup_process


def check(release_dir: str, workdir: str = "", user: str = "", config_dir: str = "") -> list[dict]:
    """Load, init and fini every module in ``workdir``, as ``user`` (from
    root) if given, confined like a worker, with the release's config set
    from ``config_dir``; return the failures."""
    setup_process()  # loads the runtime, which the workers' account may not be able to read
    if workdir:
        os.chdir(workdir)
    if user:
        hide_other_processes()
        become(user)
    open_store("lmdb:store")  # an empty store of its own, in the scratch directory
    spec = ReleaseSpec.load(Path(release_dir))
    try:
        load_config(spec, config_dir or None)
    except OSError as e:
        return [{"module": "(config)", "source": "hotplate config", "error": str(e)}]
    confine(spec, dedicated=bool(user), sanitized=bool(os.environ.get("HOTPLATE_SANITIZE")))
    modules = ModuleSet.load(release_dir)
    modules.close()
    return [{"module": m.name, "source": m.source, "error": m.error} for m in modules.modules if not m.ok]


def check_into(release_dir: str, workdir: str, user: str, config_dir: str, conn) -> None:
    """Run :func:`check` and send the result through a pipe (fork-server child)."""
    conn.send(check(release_dir, workdir, user, config_dir))
    conn.close()


def main(release_dir: str, workdir: str = "", user: str = "", config_dir: str = "") -> int:
    failures = check(release_dir, workdir, user, config_dir)
    print(json.dumps(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
