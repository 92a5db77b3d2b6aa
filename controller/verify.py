"""Signed commits (issue 9): a commit deploys only when a trusted key signed it.

As Flux's ``verify`` and Argo CD's signature keys: the trusted keys live
outside the repository they check, given to ``hotplate up --verify``:

- ``ssh:FILE``: an SSH allowed-signers file (``ssh-keygen -Y``'s format);
- ``gpg:DIR``: a GnuPG home directory holding the trusted public keys.

git itself checks the signature (``git verify-commit``). The policy is kept
in ``STATE/verify.json``, so the hosted repository's pre-receive hook refuses
an unsigned push even while the controller is down, before anything builds;
the deploy's ``verify`` stage checks again (the mirror mode's only check).
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hotplate.server.contract.layout import write_atomic

from .errors import HotplateError, RetryableError, StalledError

KINDS = ("ssh", "gpg")
VERIFY_TIMEOUT_S = 30


class UnverifiedCommit(StalledError):
    """The tip is not signed by a trusted key: only a new (signed) commit fixes it."""

    reason = "UnverifiedCommit"


@dataclass(frozen=True)
class Policy:
    """Which keys a deployable commit must be signed by."""

    kind: str
    keys: Path

    @classmethod
    def parse(cls, spec: str) -> "Policy":
        """``ssh:FILE`` or ``gpg:DIR`` (see the module's docstring).

        :raises HotplateError: for another form or keys that are not there.
        """
        kind, _, where = spec.partition(":")
        keys = Path(where).resolve()
        if kind not in KINDS or not where:
            raise HotplateError(f"--verify {spec!r}: write ssh:ALLOWED_SIGNERS_FILE or gpg:GNUPG_HOME_DIR")
        if not (keys.is_file() if kind == "ssh" else keys.is_dir()):
            raise HotplateError(f"--verify {spec!r}: {keys} is not {'a file' if kind == 'ssh' else 'a directory'}")
        return cls(kind, keys)

    @classmethod
    def load(cls, path: Path) -> "Policy | None":
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            return None
        return cls(data["kind"], Path(data["keys"]))

    def describe(self) -> str:
        return f"{self.kind}:{self.keys}"

    def check(self, repo: Path, sha: str) -> str:
        """The signer's line from git, if ``sha`` carries a good signature by
        a trusted key.

        :raises UnverifiedCommit: otherwise, with git's reason.
        :raises RetryableError: when the trusted keys are missing.
        """
        if not self.keys.exists():  # the operator's keys, not the commit, are missing: retried
            raise RetryableError(f"the trusted keys of --verify {self.describe()} are gone; put them back (the "
                                 "deploy is retried)", "VerifyKeysMissing")
        config = (["-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={self.keys}"] if self.kind == "ssh"
                  else ["-c", "gpg.format=openpgp"])
        env = {**os.environ, **({"GNUPGHOME": str(self.keys)} if self.kind == "gpg" else {})}
        try:
            result = subprocess.run(["git", "--git-dir", str(repo), *config, "verify-commit", "--", sha],
                                    capture_output=True, text=True, env=env, timeout=VERIFY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise UnverifiedCommit(f"checking the signature of {sha[:12]} took over {VERIFY_TIMEOUT_S}s") from None
        said = " ".join(result.stderr.split())
        if result.returncode != 0:
            why = said or "it carries no signature"
            raise UnverifiedCommit(f"commit {sha[:12]} is not signed by a key trusted by --verify {self.describe()} "
                                   f"({why[:300]}); sign it (git commit -S) with a trusted key and push again")
        return said


def save(policy: Policy | None, path: Path) -> None:
    """Record the policy for the hook (or remove it: no policy)."""
    if policy is None:
        Path(path).unlink(missing_ok=True)
    else:
        write_atomic(Path(path), json.dumps({"kind": policy.kind, "keys": str(policy.keys)}))
