"""Releases as OCI artifacts in a registry: build once, every host pulls
(issue 11; the shape Fission and Flux use).

:func:`push` stores a release directory in a registry (the OCI distribution
API, e.g. Debian's ``docker-registry``): each file a content-addressed blob
(a module's shared object, ``build.json``, ``deploy.yaml``), ``release.json``
the artifact's config, one manifest tagged with the release id. Blobs the
registry holds already are not sent again, so a release that changes one
module uploads one object.

:func:`pull` makes the same release directory on another host: it fetches
only the blobs its cache lacks, checks every digest, refuses any path that
would leave the release, and moves the directory into place whole (or not
at all). The caller smoke-checks it before it goes live, as for a build.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import HotplateError, RetryableError, StalledError

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.hotplate.release.v1+json"
FILE_TYPE = "application/vnd.hotplate.file.v1"
PROMOTION_TYPE = "application/vnd.hotplate.promotion.v1+json"
TITLE = "org.opencontainers.image.title"
#: the only files a release holds besides release.json
FILE_RE = re.compile(r"(modules/[a-z][a-z0-9_-]*-[0-9a-f]{16}\.so|build\.json|deploy\.yaml|config\.age)")
RELEASE_RE = re.compile(r"r[0-9a-f]{12}")
#: An OCI tag (the distribution spec's grammar).
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
TIMEOUT_S = 30


@dataclass
class Transfer:
    release: str
    digest: str  # the manifest's
    blobs: int  # files in the release
    moved: int  # blobs sent (push) or fetched (pull), the config included


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Registry:
    """One repository of a registry: ``http://HOST:PORT/NAME``."""

    def __init__(self, url: str):
        base, _, name = url.rstrip("/").rpartition("/")
        name, _, tag = name.partition(":")
        if not base.startswith(("http://", "https://")) or not name or (tag and not TAG.fullmatch(tag)):
            raise StalledError(f"{url}: a registry repository is http(s)://HOST:PORT/NAME, or NAME:TAG for an "
                               "environment's own tag (letters, digits, '.', '_', '-')", "BadRegistry")
        #: the tag this host publishes or follows: ``live``, or an environment's (``staging``, ``production``)
        self.base, self.name, self.tag = base, name, tag or "live"
        self.url = f"{base}/{name}"

    def call(self, method: str, path: str, data: bytes | None = None, headers: dict | None = None):
        url = path if path.startswith("http") else f"{self.base}/v2/{self.name}/{path}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            return urllib.request.urlopen(req, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as e:
            if method == "HEAD" and e.code == 404:
                return None
            detail = e.read()[:300].decode(errors="replace")
            raise RetryableError(f"registry {self.base}: {method} {path}: {e.code} {detail}", "RegistryError") \
                from None
        except OSError as e:
            raise RetryableError(f"registry {self.base} unreachable: {e}", "RegistryUnreachable") from None

    def has(self, digest: str) -> bool:
        return self.call("HEAD", f"blobs/{digest}") is not None

    def upload(self, data: bytes, digest: str) -> bool:
        """Store a blob unless the registry has it; whether it was sent."""
        if self.has(digest):
            return False
        with self.call("POST", "blobs/uploads/") as r:
            location = r.headers["Location"]
        if not location.startswith("http"):
            location = self.base + location
        sep = "&" if "?" in location else "?"
        self.call("PUT", f"{location}{sep}digest={digest}", data,
                  {"Content-Type": "application/octet-stream"}).close()
        return True

    def blob(self, digest: str) -> bytes:
        with self.call("GET", f"blobs/{digest}") as r:
            data = r.read()
        if sha256(data) != digest:
            raise StalledError(f"registry {self.base}: blob {digest} arrived with other content "
                               f"({sha256(data)}); nothing was installed", "DigestMismatch")
        return data

    def manifest(self, tag: str) -> tuple[dict, str]:
        data = self.raw(tag)
        return json.loads(data), sha256(data)

    def raw(self, tag: str) -> bytes:
        """A manifest's bytes, as stored: tagged again as they are, they keep their digest."""
        with self.call("GET", f"manifests/{tag}", headers={"Accept": MANIFEST_TYPE}) as r:
            return r.read()

    def tag_as(self, manifest: bytes, tag: str) -> None:
        self.call("PUT", f"manifests/{tag}", manifest, {"Content-Type": MANIFEST_TYPE}).close()


def push(release_dir: Path, url: str, tags: tuple[str, ...] = (), annotations: dict | None = None,
         extra: dict[str, bytes] | None = None) -> Transfer:
    """Publish a release directory; tag it with its id and ``tags``;
    ``annotations`` (the commit, its message and author) go in its manifest,
    and ``extra`` files (a fleet's config set, ``config.age``) with its own."""
    reg, release_dir = Registry(url), Path(release_dir)
    config = (release_dir / "release.json").read_bytes()
    release = json.loads(config)["id"]
    contents = {p.relative_to(release_dir).as_posix(): p for p in release_dir.rglob("*")
                if p.is_file() and p.name not in ("release.json", "config.age")}
    files = sorted({*contents, *(extra or {})})
    layers, moved = [], 0
    for name in files:
        data = extra[name] if name in (extra or {}) else contents[name].read_bytes()
        digest = sha256(data)
        moved += reg.upload(data, digest)
        layers.append({"mediaType": FILE_TYPE, "digest": digest, "size": len(data), "annotations": {TITLE: name}})
    moved += reg.upload(config, sha256(config))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": sha256(config), "size": len(config)},
        "layers": layers, "annotations": {**(annotations or {}), "hotplate.release": release},
    }, sort_keys=True).encode()
    for tag in (release, *tags):
        reg.tag_as(manifest, tag)
    return Transfer(release, sha256(manifest), len(files), moved)


def promote(url: str, release: str, to: str, record: dict) -> str:
    """Tag ``release``'s manifest ``to``, bytes unchanged (the same digest:
    the same release, bit for bit), and beside it ``TO.promotion``: who
    promoted it from where (``record``), for the target environment's
    history. Returns the digest."""
    reg = Registry(url)
    manifest = reg.raw(release)
    note = json.dumps({**record, "release": release}, sort_keys=True).encode()
    reg.upload(note, sha256(note))
    reg.tag_as(json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "layers": [],
        "config": {"mediaType": PROMOTION_TYPE, "digest": sha256(note), "size": len(note)},
        "annotations": {f"hotplate.promotion.{k}": str(v) for k, v in {**record, "release": release}.items()},
    }, sort_keys=True).encode(), f"{to}.promotion")
    reg.tag_as(manifest, to)  # last: the target environment reads the record of the tag it sees
    return sha256(manifest)


def pull(url: str, tag: str, releases: Path, cache: Path, check: Callable[[Path], None] | None = None) -> Transfer:
    """Make the release ``tag`` names in ``releases/<id>`` from the registry,
    through a content-addressed ``cache``; reuse it if it is there already.
    ``check`` (the smoke check) sees the assembled directory before it is
    moved into place, and may raise to refuse it."""
    reg = Registry(url)
    manifest, digest = reg.manifest(tag)
    fetched = []

    def fetch(blob: str) -> Path:
        """The cached blob, fetched (and checked) first if the cache lacks it."""
        if not _cached(cache, blob):
            _store(cache, blob, reg.blob(blob))
            fetched.append(blob)
        return _cached(cache, blob)

    config = manifest["config"]
    spec = json.loads(fetch(config["digest"]).read_bytes())
    release = spec.get("id", "")
    if not RELEASE_RE.fullmatch(release) or manifest.get("annotations", {}).get("hotplate.release") != release:
        raise StalledError(f"registry {url}:{tag} does not hold a hotplate release", "NotARelease")
    final = Path(releases) / release
    names = [layer.get("annotations", {}).get(TITLE, "") for layer in manifest["layers"]]
    bad = [n for n in names if not FILE_RE.fullmatch(n)]
    if bad:
        raise StalledError(f"registry {url}:{tag}: {bad[0]!r} is not a file a release holds; nothing was installed",
                           "UnsafeRelease")
    if (final / "release.json").exists():
        return Transfer(release, digest, len(names), len(fetched))
    for layer in manifest["layers"]:
        fetch(layer["digest"])
    Path(releases).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=releases))
    try:
        (staging / "modules").mkdir()
        for name, layer in zip(names, manifest["layers"]):
            shutil.copyfile(_cached(cache, layer["digest"]), staging / name)
        shutil.copyfile(_cached(cache, config["digest"]), staging / "release.json")
        for path in (staging, staging / "modules", *staging.rglob("*")):  # readable by the workers' account
            path.chmod(0o755 if path.is_dir() or path.suffix == ".so" else 0o644)
        if check is not None:
            check(staging)
        os.rename(staging, final)
    except FileExistsError:
        shutil.rmtree(staging, ignore_errors=True)  # another pull of the same release won
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Transfer(release, digest, len(names), len(fetched))


def _cached(cache: Path, digest: str) -> Path | None:
    path = Path(cache) / "blobs" / digest.replace(":", "/")
    return path if path.exists() else None


def _store(cache: Path, digest: str, data: bytes) -> None:
    path = Path(cache) / "blobs" / digest.replace(":", "/")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class RegistrySource:
    """What a follower host deploys (``hotplate up --follow URL``): the
    release its leader tagged ``live``, pulled instead of built. It answers
    the reconcile loop as a git source does, with the leader's commit as the
    tip; a registry it cannot reach leaves live as it is (the loop retries)."""

    builds = False  # it pulls (controller/deploy.py's FOLLOW stages)
    upcoming: str | None = None  # a release to pull ahead of its deploy (FleetSource)

    def __init__(self, url: str):
        self.url = url
        self.registry = Registry(url)
        self.live: dict = {}
        self.promotion: dict = {}  # who promoted the release the tag names, from where (an environment's tag)

    def fetch(self) -> None:
        manifest, _ = self.registry.manifest(self.registry.tag)
        self.live = manifest.get("annotations", {})
        if self.registry.tag == "live":
            return
        try:
            record, _ = self.registry.manifest(f"{self.registry.tag}.promotion")
        except HotplateError:
            record = {}  # none (the tag was moved by hand): the deploy names nobody
        self.promotion = {k.removeprefix("hotplate.promotion."): v for k, v in record.get("annotations", {}).items()}

    def actor(self, sha: str) -> str | None:
        """Who promoted the release this commit's deploy pulls, for its record."""
        p = self.promotion
        if p.get("release") and p.get("release") == self.release() and p.get("by"):
            return f"{p['by']} (promoted from {p.get('from', '?')})"
        return None

    def tip(self) -> str | None:
        return self.live.get("hotplate.commit")

    def release(self) -> str | None:
        """The release to serve: the leader's build of the tip, config set and all."""
        return self.live.get("hotplate.release")

    def config(self) -> str | None:
        """The digest of that release's config set (sealed by the leader)."""
        return self.live.get("hotplate.config") or None

    def commit_info(self, sha: str) -> dict:
        return {"message": self.live.get("hotplate.message", ""), "author": self.live.get("hotplate.author", ""),
                "release": self.release()}

    def show(self, sha: str, path: str) -> str | None:
        return None  # followers deploy no committed config (it is the leader's to seal)

    def is_ancestor(self, sha: str, other: str) -> bool:
        return sha == other

    def checkout(self, sha: str):
        raise StalledError(f"this host follows {self.url}: it pulls releases, it does not build", "Follower")

    def revert(self, sha: str, force: bool = False) -> str:
        raise StalledError(f"this host follows {self.url}: revert on the leader", "Follower")
