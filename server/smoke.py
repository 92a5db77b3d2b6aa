"""Smoke check: load a release in a throwaway process before it may go live.

:func:`check` loads every module, checks its ABI and handler symbols, runs
hp_init and hp_fini, and lists ``{"module", "source", "error"}`` for each
failure. It runs in a child of the controller's fork server
(controller/release.py), or as ``python -m hotplate.server.smoke RELEASE_DIR``, which
prints that list as JSON. A module that kills the process fails the release,
not a server.
"""
from __future__ import annotations

import json
import sys

from .modules import ModuleSet, setup_process


def check(release_dir: str) -> list[dict]:
    setup_process()
    modules = ModuleSet.load(release_dir)
    modules.close()
    return [{"module": m.name, "source": m.source, "error": m.error} for m in modules.modules if not m.ok]


def check_into(release_dir: str, conn) -> None:
    """Run :func:`check` and send the result through a pipe (fork-server child)."""
    conn.send(check(release_dir))
    conn.close()


def main(release_dir: str) -> int:
    failures = check(release_dir)
    print(json.dumps(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
