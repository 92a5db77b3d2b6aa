"""Plan, build and release an app directory: the stages that need no git.

Used by ``hotplate build``, ``hotplate serve``, ``hotplate dev`` and the
reconcile loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .build import Builder, BuildResult, ModuleBuild
from .plan import Manifest, load_manifest
from .release import Release, assemble
from .state import State


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
