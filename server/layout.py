"""What the controller and the gunicorn master agree on in the state
directory: the live link and the verified release.

``current`` links to ``commits/<sha>``, itself a link to
``releases/<id>``: one readlink gives the live commit, its target the live
release, and :func:`switch` replaces both at once. ``verified`` names the
release (and commit) that last passed everything it had to: its own health
gate and, in a fleet, the fleet's rollout. The controller writes both; the
master reads them to fence itself when its controller died mid-deploy
(server/gunicorn_app.py: it goes back to ``verified`` by itself).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: The name part of a link for a tree deployed without a commit (dev, serve).
WORKTREE = "worktree"

#: Present while the controller that was gating the live release is gone
#: (written by the master's fence, server/gunicorn_app.py): only the
#: verified release may then call itself ready.
FENCED = "run/fenced"


@dataclass(frozen=True)
class Verified:
    """The release a host may serve when nobody is deploying."""

    release: str
    commit: str | None = None

    def write(self, root: Path) -> None:
        write_atomic(Path(root) / "verified", json.dumps({"release": self.release, "commit": self.commit}) + "\n",
                     mode=0o644)

    @classmethod
    def read(cls, root: Path) -> "Verified | None":
        try:
            data = json.loads((Path(root) / "verified").read_text())
            return cls(str(data["release"]), data.get("commit") and str(data["commit"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def ready(root: Path, release: str) -> bool:
    """Whether a worker on ``release`` may take traffic: it is verified,
    or it is live and a living controller gates it."""
    root = Path(root)
    verified = Verified.read(root)
    return (verified is not None and verified.release == release) or \
        (release == live_release(root) and not (root / FENCED).exists())


def live_release(root: Path) -> str | None:
    """The id of the release ``current`` leads to, if it exists."""
    root = Path(root)
    target = Path(os.path.realpath(root / "current"))
    return target.name if target.parent == (root / "releases").resolve() and target.is_dir() else None


def switch(root: Path, release_id: str, commit: str | None) -> None:
    """Point ``current`` at a release atomically, through the link of the
    commit that built it (``commits/<sha>``; a working tree without git
    has none): readers see the old pair or the new pair, never a mix."""
    root = Path(root)
    name = commit or f"{WORKTREE}-{release_id}"
    _link(root / "commits" / name, os.path.join("..", "releases", release_id))
    _link(root / "current", os.path.join("commits", name))


def _link(path: Path, target: str) -> None:
    """Make ``path`` a symlink to ``target``, replacing any old one atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, path)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a file so readers see the old or the new content, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
