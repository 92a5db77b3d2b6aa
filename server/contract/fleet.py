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
    """``cls`` from JSON text or an already parsed mapping; raises :class:`Unreadable`."""
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
    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except (TypeError, ValueError) as e:
        raise Unreadable(f"not a {what} ({e})") from None


#: What a field's annotation accepts (bool is an int to Python, never to a record).
_SCALARS = {"str": (str,), "int": (int,), "float": (int, float)}


class _Record:
    """A record typed by its own annotations: each scalar field is checked
    against them, a nested record's mapping becomes that record, and
    :meth:`dump`/:meth:`load` write and read it as JSON."""

    WHAT = "record"

    def __post_init__(self):
        for f in fields(self):
            value, kind = getattr(self, f.name), f.type
            optional, kind = kind.endswith(" | None"), kind.removesuffix(" | None")
            if value is None and optional:
                continue
            nested = _NESTED.get(kind)
            if nested is not None and isinstance(value, dict):
                object.__setattr__(self, f.name, value := _load(nested, value, nested.WHAT))
            accepted = (nested,) if nested else _SCALARS.get(kind)
            if accepted and (not isinstance(value, accepted) or isinstance(value, bool)):
                raise ValueError(f"{f.name} is {type(value).__name__}, not {kind}")

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def load(cls, data):
        """:raises Unreadable: for anything that is not one."""
        return _load(cls, data, cls.WHAT)


@dataclass(frozen=True)
class Target(_Record):
    """A release as a rollout names it (and as the registry annotates it)."""

    WHAT = "release target"
    release: str
    commit: str | None = None
    message: str = ""
    author: str = ""
    config: str | None = None

    def annotations(self) -> dict[str, str]:
        """The target as the registry's manifest annotations say it
        (controller/registry.py: ``hotplate.<field>``)."""
        return {f"hotplate.{k}": v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Failure(_Record):
    """A host's last deploy that did not succeed."""

    WHAT = "failure"
    release: str | None = None
    commit: str | None = None
    reason: str | None = None
    outcome: str = "failed"  # (reports of hosts that predate outcomes: the release's fault)

    def blames(self) -> bool:
        """Whether it is the release's fault (:data:`BLAMES`)."""
        return self.outcome in BLAMES


@dataclass(frozen=True)
class HostReport(_Record):
    """What one host tells its fleet (``hosts/<host>``): what it serves, how
    healthy, what it is deploying ("" when it does not know the commit yet;
    None when idle), its last failure, and the key the leader encrypts config
    sets to. ``error`` is set, and nothing else, for a key that holds no
    report: the host is shown ``Unreadable``."""

    WHAT = "host report"
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

    @classmethod
    def load(cls, data) -> "HostReport":
        """A report, or one that says why the key holds none (``error``)."""
        try:
            return super().load(data)
        except Unreadable as e:
            return cls(error=str(e))


@dataclass(frozen=True)
class Member(_Record):
    """When a host that ever joined last reported (``members/<host>``, no
    lease): a host whose report is gone is ``Missing`` since then."""

    WHAT = "member"
    seen: float = 0.0
    format: int = FORMAT

    @classmethod
    def load(cls, data) -> "Member":
        """A member; one that cannot be read was seen at no known time (0)."""
        try:
            return super().load(data)
        except Unreadable:
            return cls()


@dataclass
class Rollout(_Record):
    """One release rolling out over the fleet, wave after wave (``rollout``).

    ``waves[0]`` is the leader (the canary), then batches of the other
    hosts. A host serves ``target`` once its wave is admitted (``wave`` is
    the last admitted one), and every host does once the rollout is
    ``Done``; before that, and after ``RolledBack``, it serves ``previous``.
    """

    WHAT = "rollout"
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
        super().__post_init__()
        if not (isinstance(self.waves, list) and all(isinstance(w, list) and all(isinstance(h, str) for h in w)
                                                    for w in self.waves)):
            raise ValueError("waves is a list of lists of hosts")
        if self.state not in ("Progressing", "Done", "RolledBack"):
            raise ValueError(f"state {self.state!r} is not one")

    def desired(self, host: str) -> Target | None:
        admitted = any(host in wave for wave in self.waves[:self.wave + 1])
        if self.state == "Done" or (self.state == "Progressing" and admitted):
            return self.target
        return self.previous

    @property
    def back(self) -> str:
        """What every host goes back to if this rollout ends ``RolledBack``."""
        return self.previous.release if self.previous else "no release"


#: The records a field may hold, by the name its annotation gives.
_NESTED = {"Target": Target, "Failure": Failure}
