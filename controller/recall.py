"""A tree released here before is that release again (issue 23: a revert
goes live without checkout, plan or build).

A commit's release is fixed by its tree, its config set and the toolchain
that builds it (the compiler and hotplate's SDK, as in every module's cache
key). After each release is made (or found) its key links to it under
``STATE/trees``; a deploy whose key links to a release still retained goes
live on it, bit for bit the release that was checked before. What the key
leaves out, a full build would see: system headers or pkg-config files
changed since that release was built (``hotplate restart`` does not
rebuild either; a new commit does).
"""
from __future__ import annotations

import hashlib
import json
import os

from hotplate.server.contract.layout import link
from hotplate.server.libhotplate import compiler_version, sdk_digest

from .build import CC, BuildResult, ModuleBuild
from .state import State


def key(tree: str, config: str | None) -> str:
    """What a commit's release is made of, short of building it."""
    ident = {"tree": tree, "config": config, "cc": compiler_version(CC), "sdk": sdk_digest()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def remember(state: State, name: str, release_id: str) -> None:
    """Link ``name`` to the release made of it (replacing any older link)."""
    state.trees.mkdir(mode=0o700, exist_ok=True)
    link(state.trees / name, os.path.join("..", "releases", release_id))


def find(state: State, name: str) -> str | None:
    """The retained release ``name`` was made into, if any."""
    try:
        release_id = os.path.basename(os.readlink(state.trees / name))
    except OSError:
        return None
    return release_id if state.release(release_id) is not None else None


def build_of(state: State, release_id: str) -> BuildResult:
    """The modules of a recalled release as its build recorded them, each
    taken from the cache this time (the history's module records)."""
    records = state.build_info(release_id).get("modules") or []
    fields = ModuleBuild.__dataclass_fields__
    return BuildResult(tuple(ModuleBuild(**{**{k: v for k, v in m.items() if k in fields}, "cached": True,
                                            "seconds": 0.0, "object_path": None})
                             for m in records if isinstance(m, dict)), 0.0)
