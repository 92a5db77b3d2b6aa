"""The hosted repository's hooks: ``python -m hotplate.controller.hook HOOK STATE``.

``pre-receive`` runs before a push updates anything: with a signed-commit
policy (``hotplate up --verify``) it refuses a tip without a trusted
signature, so nothing of it builds. ``post-receive`` runs after a push
updated refs; whatever it prints reaches the pusher as ``remote:`` lines. It asks the running controller to deploy and streams
the deploy's progress (validate, build per module with compiler output,
roll, verify, result). Pushes are accepted before the build: a commit that
fails to build stays on the branch, is reported failed, and live keeps
serving the last good release (see the README).
"""
from __future__ import annotations

import http.client
import sys
import urllib.parse
from pathlib import Path

from .errors import HotplateError
from .push import END
from .state import State
from .verify import Policy


def main(hook: str, state_root: str) -> int:
    state = State(Path(state_root))
    info = state.read_json(state.controller_info, {})
    branch_ref = f"refs/heads/{info.get('branch', 'main')}"
    if hook == "pre-receive":
        return pre_receive(state, branch_ref)
    for line in sys.stdin:
        old, new, ref = line.split()
        if ref != branch_ref:
            print(f"hotplate: {ref} is not tracked (pushes to {branch_ref} deploy); nothing to do")
        elif set(new) == {"0"}:
            print(f"hotplate: {ref} deleted; live keeps serving release {state.live_release()}")
        else:
            follow(state, info, new)
    return 0


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


def follow(state: State, info: dict, sha: str) -> None:
    if not info.get("url"):
        print("hotplate: the controller is not running; this commit deploys when `hotplate up` starts")
        return
    url = urllib.parse.urlsplit(info["url"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=900)
    try:
        conn.request("POST", f"/api/follow?commit={sha}", headers={"Authorization": f"Bearer {state.token()}"})
        resp = conn.getresponse()
        if resp.status != 200:
            print(f"hotplate: the controller refused: {resp.status} {resp.read().decode(errors='replace').strip()}")
            return
        for raw in resp:
            line = raw.decode(errors="replace").rstrip("\n")
            if line == END:
                return
            print("hotplate: " + line, flush=True)
        raise http.client.IncompleteRead(b"", None)  # cut before its end: no outcome was said
    except (OSError, http.client.HTTPException) as e:
        print(f"hotplate: lost the controller at {info['url']} mid-push ({type(e).__name__}: {e}); its outcome "
              "is not known here: see `hotplate status` and `hotplate history` (the commit deploys when the "
              "controller runs again)")
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
