"""Smoke check: load a release in a throwaway process before it may go live.

``python -m server.smoke RELEASE_DIR`` loads every module, checks its ABI and
handler symbols, runs hp_init and hp_fini, and prints a JSON list of
``{"module", "error"}`` for each failure. A module that kills this process
fails the release, not a server.
"""
from __future__ import annotations

import json
import sys

from .modules import ModuleSet, setup_process


def main(release_dir: str) -> int:
    setup_process()
    modules = ModuleSet.load(release_dir)
    modules.close()
    failures = [{"module": m.name, "source": m.source, "error": m.error} for m in modules.modules if not m.ok]
    print(json.dumps(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
