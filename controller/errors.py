"""Errors that say what went wrong, where, and what to do.

Each kind says what the controller does next, after Flux's error kinds:
a :class:`StalledError` waits for a new commit (the commit's own fault:
retrying cannot help), a :class:`RetryableError` is tried again with backoff
(the environment's fault: disk, network, the app server, time limits). Any
other exception is a bug: the deploy ends ``failed`` with its traceback.
A plain :class:`HotplateError` is a command's own input or setup gone wrong
(a flag, a file's mode, an account, a port in use): the command stops and
says what to fix. A deploy's stages raise only the two kinds.
"""
from __future__ import annotations

import errno

#: errno values that mean the disk is full: the environment's fault, retried.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class HotplateError(Exception):
    """Base of all errors hotplate reports to a user.

    :param reason: a CamelCase reason for status conditions and history.
    """

    reason = "Error"

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        if reason:
            self.reason = reason


class StalledError(HotplateError):
    """The input is wrong (manifest, C code): only a new commit fixes it."""

    reason = "Stalled"


class RetryableError(HotplateError):
    """A passing failure (fetch, disk, the app server): try again later."""

    reason = "Retryable"


class RolloutError(HotplateError):
    """The new generation did not come up or failed its health gate: rolled back."""

    reason = "RolloutFailed"


class ManifestError(StalledError):
    """``deploy.yaml`` is invalid; ``problems`` lists every finding."""

    reason = "ManifestInvalid"

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("deploy.yaml is invalid:\n" + "\n".join(f"  {p}" for p in problems))


class BuildError(StalledError):
    """One or more modules did not compile; ``results`` holds all of them."""

    reason = "BuildFailed"

    def __init__(self, message: str, results: list | None = None):
        super().__init__(message)
        self.results = results or []


class SmokeCheckError(StalledError):
    """The built modules failed to load, bind or init in a throwaway process."""

    reason = "SmokeCheckFailed"
