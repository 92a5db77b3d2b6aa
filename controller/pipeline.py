"""Plan, build and release an app directory: the stages that need no git.

Used by ``hotplate build`` and ``hotplate serve``, and by the reconcile loop.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .build import Builder, BuildResult, ModuleBuild
from .plan import Manifest, load_manifest
from .release import Release, assemble


@dataclass(frozen=True)
class State:
    """Where everything the controller keeps lives: one directory.

    ``cache/`` build cache, ``releases/`` release directories, ``current``
    the live release link.
    """

    root: Path

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def current(self) -> Path:
        return self.root / "current"

    def live_release(self) -> str | None:
        try:
            return os.readlink(self.current)
        except OSError:
            return None

    def switch(self, release: Release) -> None:
        """Point ``current`` at the release atomically (symlink + rename)."""
        tmp = self.root / f".current-{os.getpid()}"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(os.path.relpath(release.path, self.root), tmp)
        os.replace(tmp, self.current)


@dataclass(frozen=True)
class Outcome:
    manifest: Manifest
    build: BuildResult
    release: Release


def build_release(app_root: Path, state: State, on_module=None, meta: dict | None = None) -> Outcome:
    """Validate, build and assemble; raises a HotplateError at the first failing stage.

    :param on_module: called with each :class:`ModuleBuild` as it finishes.
    """
    manifest = load_manifest(app_root)
    build = Builder(app_root, state.cache).build(manifest, on_result=on_module)
    release = assemble(app_root, manifest, build, state.releases, meta)
    return Outcome(manifest, build, release)


def format_module(result: ModuleBuild) -> str:
    """One progress line for a built module."""
    how = "cached" if result.cached else f"compiled in {result.seconds * 1000:.0f} ms"
    if not result.ok:
        how = "FAILED"
    return f"{result.name} ({result.source}): {how}"
