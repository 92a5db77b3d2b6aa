"""The state directory: everything hotplate keeps, under one root.

Like Piku's settings block: every path is derived here, nowhere else.
"""
from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class State:
    """Paths under the state root (``.hotplate/`` by default).

    ``repo.git`` the hosted (or mirrored) repository, ``cache/`` build cache,
    ``releases/`` release directories, ``current`` the live release link,
    ``run/`` pid files and worker reports, ``hotplate.db`` deploy history.
    """

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def repo(self) -> Path:
        return self.root / "repo.git"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def sources(self) -> Path:
        return self.root / "src"

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def workers(self) -> Path:
        return self.run / "workers"

    @property
    def db(self) -> Path:
        return self.root / "hotplate.db"

    @property
    def server_pid(self) -> Path:
        return self.run / "server.pid"

    @property
    def control_socket(self) -> Path:
        return self.run / "gunicorn.ctl"

    @property
    def controller_info(self) -> Path:
        return self.run / "controller.json"

    def make(self) -> "State":
        for path in (self.root, self.releases, self.workers):
            path.mkdir(parents=True, exist_ok=True)
        return self

    def token(self) -> str:
        """The API token for state-changing calls; made on first use, mode 0600."""
        path = self.root / "token"
        if not path.exists():
            write_atomic(path, secrets.token_urlsafe(32), mode=0o600)
        return path.read_text().strip()

    def live_release(self) -> str | None:
        """The id of the release ``current`` points to, if any."""
        try:
            return Path(os.readlink(self.current)).name
        except OSError:
            return None

    def release_path(self, release_id: str) -> Path:
        return self.releases / release_id

    def switch(self, release_id: str) -> None:
        """Point ``current`` at a release atomically (symlink, then rename over)."""
        tmp = self.root / f".current-{os.getpid()}"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(os.path.join("releases", release_id), tmp)
        os.replace(tmp, self.current)

    def read_json(self, path: Path, default=None):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return default


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a file so readers see the old or the new content, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
