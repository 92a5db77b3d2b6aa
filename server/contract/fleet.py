"""A fleet's records in etcd: what each host says of itself, and the rollout
the leader writes (controller/fleet.py keeps them there).

Anyone who can reach etcd can write there, and hosts of two versions may
share a fleet, so a record is read as untrusted: any text gives a record
or :class:`Unreadable`, never an exception of another kind. ``FORMAT``
versions them: a host refuses a record newer than it knows (and says to
upgrade) and reads an older one (fields it lacks take their defaults).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields

#: The version of the records this code writes and reads.
FORMAT = 1

#: The outcomes of a host's deploy that are the release's fault (it ran it
#: and its smoke check or gate failed); any other (``errored``: a lost
#: lease, etcd or the registry cut off, a full disk) is the host's
#: environment, and never fails a rollout.
BLAMES = ("failed", "rolled_back")


class Unreadable(ValueError):
    """A key that holds no record of this kind (garbage, or a newer format)."""


def _load(cls, data, what: str):
    """``cls`` from JSON text or an already parsed mapping, checking each
    field's type by its default's; raises :class:`Unreadable`."""
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except ValueError as e:
            raise Unreadable(f"not JSON ({e})") from None
    if not isinstance(data, dict):
        raise Unreadable(f"not a {what} (a JSON {type(data).__name__})")
    version = data.get("format", 1)
    if not isinstance(version, int) or version > FORMAT:
        raise Unreadable(f"a {what} of format {version!r}, newer than this host's {FORMAT}: upgrade hotplate here")
    known = {f.name: f for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except (TypeError, ValueError) as e:
        raise Unreadable(f"not a {what} ({e})") from None


def _text(value, name: str, optional: bool = True):
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} is {type(value).__name__}, not text")
    return value


@dataclass(frozen=True)
class Target:
    """A release as a rollout names it (and as the registry annotates it)."""

    release: str
    commit: str | None = None
    message: str = ""
    author: str = ""
    config: str | None = None

    def __post_init__(self):
        _text(self.release, "release", optional=False)
        for name in ("commit", "message", "author", "config"):
            _text(getattr(self, name), name)

    @classmethod
    def load(cls, data) -> "Target":
        return _load(cls, data, "release target")

    def annotations(self) -> dict[str, str]:
        """The target as the registry's manifest annotations say it
        (controller/registry.py: ``hotplate.<field>``)."""
        return {f"hotplate.{k}": v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Failure:
    """A host's last deploy that did not succeed."""

    release: str | None = None
    commit: str | None = None
    reason: str | None = None
    outcome: str = "failed"  # (reports of hosts that predate outcomes: the release's fault)

    def __post_init__(self):
        for name in ("release", "commit", "reason"):
            _text(getattr(self, name), name)
        _text(self.outcome, "outcome", optional=False)

    def blames(self) -> bool:
        """Whether it is the release's fault (:data:`BLAMES`)."""
        return self.outcome in BLAMES


@dataclass(frozen=True)
class HostReport:
    """What one host tells its fleet (``hosts/<host>``): what it serves, how
    healthy, what it is deploying ("" when it does not know the commit yet;
    None when idle), its last failure, and the key the leader encrypts config
    sets to. ``error`` is set, and nothing else, for a key that holds no
    report: the host is shown ``Unreadable``."""

    release: str | None = None
    commit: str | None = None
    health: str | None = None
    deploying: str | None = None
    failed: Failure | None = None
    role: str | None = None
    at: float = 0.0
    recipient: str | None = None
    error: str | None = None
    format: int = FORMAT

    def __post_init__(self):
        for name in ("release", "commit", "health", "deploying", "role", "recipient", "error"):
            _text(getattr(self, name), name)
        if isinstance(self.failed, dict):
            object.__setattr__(self, "failed", _load(Failure, self.failed, "failure"))
        elif self.failed is not None and not isinstance(self.failed, Failure):
            raise ValueError("failed is not a failure")
        if not isinstance(self.at, (int, float)):
            raise ValueError("at is not a time")

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def load(cls, data) -> "HostReport":
        """A report, or one that says why the key holds none (``error``)."""
        try:
            return _load(cls, data, "host report")
        except Unreadable as e:
            return cls(error=str(e))


@dataclass(frozen=True)
class Member:
    """When a host that ever joined last reported (``members/<host>``, no
    lease): a host whose report is gone is ``Missing`` since then."""

    seen: float = 0.0
    format: int = FORMAT

    def __post_init__(self):
        if not isinstance(self.seen, (int, float)):
            raise ValueError("seen is not a time")

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def load(cls, data) -> "Member":
        """A member; one that cannot be read was seen at no known time (0)."""
        try:
            return _load(cls, data, "member")
        except Unreadable:
            return cls()


@dataclass
class Rollout:
    """One release rolling out over the fleet, wave after wave (``rollout``).

    ``waves[0]`` is the leader (the canary), then batches of the other
    hosts. A host serves ``target`` once its wave is admitted (``wave`` is
    the last admitted one), and every host does once the rollout is
    ``Done``; before that, and after ``RolledBack``, it serves ``previous``.
    """

    target: Target
    previous: Target | None
    waves: list[list[str]]
    leader: str
    wave: int = 0
    state: str = "Progressing"  # Done, RolledBack
    reason: str | None = None
    started: float = field(default_factory=time.time)
    format: int = FORMAT

    def __post_init__(self):
        if isinstance(self.target, dict):
            self.target = Target.load(self.target)
        if isinstance(self.previous, dict):
            self.previous = Target.load(self.previous)
        if not isinstance(self.target, Target) or not (self.previous is None or isinstance(self.previous, Target)):
            raise ValueError("target and previous are releases")
        if not (isinstance(self.waves, list) and all(isinstance(w, list) and all(isinstance(h, str) for h in w)
                                                    for w in self.waves)):
            raise ValueError("waves is a list of lists of hosts")
        if not isinstance(self.wave, int) or self.state not in ("Progressing", "Done", "RolledBack"):
            raise ValueError(f"wave {self.wave!r} or state {self.state!r} is not one")
        _text(self.leader, "leader", optional=False)
        _text(self.reason, "reason")

    def desired(self, host: str) -> Target | None:
        admitted = any(host in wave for wave in self.waves[:self.wave + 1])
        if self.state == "Done" or (self.state == "Progressing" and admitted):
            return self.target
        return self.previous

    @property
    def back(self) -> str:
        """What every host goes back to if this rollout ends ``RolledBack``."""
        return self.previous.release if self.previous else "no release"

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def load(cls, data) -> "Rollout":
        """:raises Unreadable: for anything that is not a rollout."""
        return _load(cls, data, "rollout")
