"""Source: the git repository the controller tracks, through GitPython.

Two modes, one layout: ``state/repo.git`` is a bare repository that is either
*hosted* (people push to it; its post-receive hook streams the deploy back as
``remote:`` lines) or a *mirror* of an upstream path or URL (fetched on a poll
interval, a webhook, or ``hotplate sync``). Either way the desired state is the
tip of the tracked branch in ``repo.git``.
"""
from __future__ import annotations

import contextlib
import io
import shlex
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import git
from git.refs import SymbolicReference

from . import pushhook
from .errors import RetryableError, StalledError
from .state import State

HOOK = """#!/bin/sh
# Installed by hotplate: {why}.
{body}
"""
#: Each hook: what it does, and its body (``{python}`` and the paths filled in).
HOOKS = {"pre-receive": ("refuses a push whose commit is not signed as `hotplate up --verify` requires",
                         "[ -e {policy} ] || exit 0  # no policy: nothing to check\n"
                         "exec {python} -m hotplate.controller.hook {state}"),
         "post-receive": ("streams the deploy of a push back to the pusher",
                          "exec {python} -I -S {pushhook} {info} {token}")}


#: Seconds without a read of an object after which GitPython's two ``git
#: cat-file`` processes end (3 MB at rest, issue 23); the next read starts
#: them again, and a push's arrival does ahead of its deploy (Source.warm).
REST_S = 2.0

#: git's id of the tree with no entries.
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


class Source:
    """The tracked repository.

    :param upstream: a path or URL to mirror; None to host the repository.
    """

    builds = True  # its commits are checked out and built (controller/deploy.py's COMMIT stages)
    upcoming = None  # a release to pull ahead of its deploy: only a fleet's follower knows one (FleetSource)

    def __init__(self, state: State, branch: str = "main", upstream: str | None = None):
        self.state = state
        self.branch = branch
        self.upstream = upstream
        self.repo = self.ensure()
        # GitPython reads objects through one `git cat-file` process per
        # repository, and two threads at once (the loop's deploy, the API's
        # status) hang on it: four threads reading commits did within 300
        # reads each. Every read of an object holds this (reading()).
        self.objects = threading.Lock()
        self.last_read = 0.0
        self.resting: threading.Timer | None = None

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"

    def ensure(self) -> git.Repo:
        """Create the bare repository (and hook, or mirror remote) if missing."""
        path = self.state.repo
        repo = git.Repo(path) if (path / "HEAD").exists() else git.Repo.init(path, bare=True, initial_branch=self.branch)
        path.chmod(0o700)  # the source may hold more than the workers should read (controller/state.py)
        with repo.config_writer() as cfg:
            cfg.set_value("receive", "denyNonFastForwards", "false")
            cfg.set_value("http", "receivepack", "true")
        if self.upstream:
            if "origin" in [r.name for r in repo.remotes]:
                repo.delete_remote(repo.remote("origin"))
            repo.create_remote("origin", self.upstream)
        paths = {"python": sys.executable, "pushhook": pushhook.__file__, "policy": self.state.verify_file,
                 "state": self.state.root, "info": self.state.controller_info, "token": self.state.token_file}
        for name, (why, body) in HOOKS.items():
            hook = path / "hooks" / name
            hook.write_text(HOOK.format(why=why, body=body.format(**{k: shlex.quote(str(v)) for k, v in paths.items()})))
            hook.chmod(0o755)
        return repo

    def fetch(self) -> None:
        """Update a mirror from upstream (no-op when hosting)."""
        if not self.upstream:
            return
        try:
            self.repo.git.fetch("--prune", "--force", "origin", "+refs/heads/*:refs/heads/*")
        except git.GitCommandError as e:
            raise RetryableError(f"git fetch from {self.upstream} failed: {e.stderr.strip()}", "FetchFailed") from None

    def tip(self) -> str | None:
        """The desired commit: the tracked branch's tip, or None if the branch
        does not exist. Read from the ref's file (or ``packed-refs``) with no
        git process: it is the first thing a push's deploy asks (``git
        rev-parse`` took 2 ms of it), and the API's threads ask it too."""
        try:
            return SymbolicReference.dereference_recursive(self.repo, self.ref)
        except ValueError:
            return None

    @contextlib.contextmanager
    def reading(self):
        """Hold the object database, and let its processes end once it has
        been idle REST_S."""
        with self.objects:
            try:
                yield
            finally:  # (a read that failed may have started them too)
                self.last_read = time.monotonic()
                if self.resting is None:
                    self.rest_in(REST_S)

    def rest_in(self, seconds: float) -> None:
        self.resting = threading.Timer(seconds, self.rest)
        self.resting.daemon = True
        self.resting.start()

    def rest(self) -> None:
        with self.objects:
            idle = time.monotonic() - self.last_read
            if idle < REST_S:
                self.rest_in(REST_S - idle)
            else:
                self.resting = None
                self.repo.git.clear_cache()  # (ends the cat-file processes)

    def warm(self) -> None:
        """A push's objects are arriving: start the processes its deploy
        reads the commit through (a few ms of its start), on the tip it replaces."""
        if (tip := self.tip()) is not None:
            self.commit_info(tip)

    def commit_info(self, sha: str) -> dict:
        with self.reading():
            c = self.repo.commit(sha)
            return {"sha": c.hexsha, "author": f"{c.author.name} <{c.author.email}>",
                    "message": c.message.strip().splitlines()[0] if c.message.strip() else ""}

    def tree(self, sha: str) -> str:
        """The id of a commit's tree (from the object database: no checkout)."""
        with self.reading():
            return self.repo.commit(sha).tree.hexsha

    def blob(self, sha: str, path: str) -> bytes | None:
        """A regular file's bytes at a commit, or None (missing, a link, a directory)."""
        with self.reading():
            try:
                entry = self.repo.commit(sha).tree[path]
            except KeyError:
                return None
            return entry.data_stream.read() if entry.type == "blob" and entry.mode in (0o100644, 0o100755) else None

    def actor(self, sha: str) -> str | None:
        """Who the source says asked for ``sha``'s deploy: nobody here (a
        push's hook names its pusher); a registry names who promoted it."""
        return None

    def is_ancestor(self, older: str, newer: str) -> bool:
        try:
            self.repo.git.merge_base("--is-ancestor", older, newer)
            return True
        except git.GitCommandError:
            return False

    def checkout(self, sha: str) -> Path:
        """Extract the commit's tree into a new directory under ``src/`` that
        belongs to the caller alone (a deploy and a diff of one commit never
        share one). The caller removes it.

        :raises StalledError: ``UnsafeTree``, naming every link that is
            absolute or leaves the tree (and every other entry extraction
            refuses), so that one fix mends them all.
        """
        self.state.sources.mkdir(parents=True, exist_ok=True)
        dest = Path(tempfile.mkdtemp(prefix=f"{sha[:12]}-", dir=self.state.sources))
        try:
            if self.tree(sha) != EMPTY_TREE:  # tarfile refuses an empty archive
                buf = io.BytesIO()
                self.repo.archive(buf, sha, format="tar")
                buf.seek(0)
                with tarfile.open(fileobj=buf) as tar:
                    _check_members(tar, dest)
                    tar.extractall(dest, filter="data")
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        return dest

    def show(self, sha: str, path: str) -> str | None:
        """A file's text at a commit, or None."""
        try:
            return self.repo.git.show(f"{sha}:{path}")
        except git.GitCommandError:
            return None

    def revert(self, sha: str, force: bool = False) -> str:
        """Commit a revert of ``sha`` on the tracked branch (hosted mode); return the new tip.

        A merge is reverted against its first parent. Reverting a revert puts
        the reverted change back live, so it needs ``force``.
        """
        if self.upstream:
            raise StalledError("revert works on the hosted repository; in mirror mode, revert upstream and push there",
                               "MirrorMode")
        try:
            with self.reading():
                commit = self.repo.commit(sha)
                hexsha, message, summary, merge = commit.hexsha, commit.message, commit.summary, len(commit.parents) > 1
        except (ValueError, git.BadName, git.GitCommandError):
            raise StalledError(f"unknown commit {sha!r}; see `hotplate history` or `git log`", "UnknownCommit") from None
        if not self.is_ancestor(hexsha, self.ref):
            raise StalledError(f"{hexsha[:12]} is not on {self.branch}; nothing to revert", "UnknownCommit")
        if message.startswith('Revert "') and not force:
            raise StalledError(f"{hexsha[:12]} is itself a revert ({summary}); reverting it puts the "
                               "reverted change live again. Pass --force if that is what you want", "RevertOfRevert")
        with tempfile.TemporaryDirectory() as tmp:
            work = git.Repo.clone_from(str(self.state.repo), tmp, branch=self.branch)
            with work.config_writer() as cfg:
                cfg.set_value("user", "name", "hotplate")
                cfg.set_value("user", "email", "hotplate@localhost")
            try:
                work.git.revert("--no-edit", *(["-m", "1"] if merge else []), hexsha)
            except git.GitCommandError as e:
                raise StalledError(f"git revert {hexsha[:12]} failed: {e.stderr.strip()}; "
                                   "revert it by hand and push", "RevertFailed") from None
            work.git.push("origin", f"HEAD:{self.ref}")
            return work.head.commit.hexsha

    def import_from(self, path: str) -> bool:
        """Seed an empty hosted branch from a local repository's HEAD; True if it did."""
        if self.tip() is not None:
            return False
        source = Path(path).resolve()  # git runs inside repo.git: a relative path would mean repo.git itself
        try:
            self.repo.git.fetch(str(source), f"+HEAD:{self.ref}")
        except git.GitCommandError as e:
            raise StalledError(f"cannot import {source}: {e.stderr.strip()}; is it a git repository with a commit?",
                               "ImportFailed") from None
        return True


def _check_members(tar: tarfile.TarFile, dest: Path) -> None:
    """Every entry the extraction's filter refuses, said at once."""
    refused = []
    for member in tar.getmembers():
        try:
            tarfile.data_filter(member, str(dest))
        except tarfile.FilterError as e:
            refused.append(f"  {member.name}: {e}")
    if refused:
        raise StalledError(f"{len(refused)} entr{'y' if len(refused) == 1 else 'ies'} of the tree cannot be "
                           "deployed; commit files and relative links that stay inside the app:\n" + "\n".join(refused),
                           "UnsafeTree")
