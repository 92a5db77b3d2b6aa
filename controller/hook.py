"""The hosted repository's pre-receive hook: ``python -m hotplate.controller.hook STATE``.

It runs before a push updates anything, and only with a signed-commit
policy (``hotplate up --verify``): it refuses a tip without a trusted
signature, so nothing of it builds. (The post-receive hook, which streams
the deploy back, is controller/pushhook.py.)
"""
from __future__ import annotations

import sys
from pathlib import Path

from .errors import HotplateError
from .state import State
from .verify import Policy


def main(state_root: str) -> int:
    state = State(Path(state_root))
    info = state.read_json(state.controller_info, {})
    return pre_receive(state, f"refs/heads/{info.get('branch', 'main')}")


def pre_receive(state: State, branch_ref: str) -> int:
    """Refuse the whole push (exit 1) if the tracked branch's new tip is not
    signed as the policy requires. git runs this with the pushed objects
    in quarantine, which ``git verify-commit`` sees through the environment."""
    policy = Policy.load(state.verify_file)
    for line in sys.stdin:
        _, new, ref = line.split()
        if policy is None or ref != branch_ref or set(new) == {"0"}:
            continue
        try:
            policy.check(state.repo, new)
        except HotplateError as e:  # unsigned, or keys missing: nothing unchecked goes in
            print(f"hotplate: REFUSED: {e}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
