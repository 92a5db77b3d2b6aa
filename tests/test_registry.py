"""Build once, every host pulls (issue 11, part): releases as OCI artifacts
in a real registry (Debian's docker-registry, started on a free port)."""
from __future__ import annotations

import hashlib
import json
import urllib.request

import pytest

from hotplate.controller import localfleet
from hotplate.controller.deploy import build_release
from hotplate.controller.errors import StalledError
from hotplate.controller.registry import pull, push
from hotplate.controller.state import State

from .conftest import terminate, write_app

APP = """\
    modules:
      a:
        source: a.c
        routes: [{path: /a, handler: a}]
      b:
        source: b.c
        routes: [{path: /b, handler: b}]
    """
SOURCE = '#include <hotplate.h>\nHP_MODULE;\nHP_EXPORT int {0}(hp_request *q, hp_response *r) {{ return hp_res_printf(r, "{1}"); }}\n'


@pytest.fixture
def registry(tmp_path):
    """A registry of the test's own: (URL of a repository, its storage directory)."""
    proc, port = localfleet.registry(tmp_path)
    yield f"http://127.0.0.1:{port}/demo", tmp_path / "registry"
    terminate(proc, 5)


def build(tmp_path, name: str, b_text: str) -> tuple[State, str]:
    app = write_app(tmp_path / name, APP, {"a.c": SOURCE.format("a", "A"), "b.c": SOURCE.format("b", b_text)})
    state = State(tmp_path / f"{name}-state").make()
    return state, build_release(app, state).target


def files(release_dir) -> dict[str, str]:
    return {p.relative_to(release_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(release_dir.rglob("*")) if p.is_file()}


def test_a_release_is_pushed_once_and_pulled_whole_with_only_missing_blobs(registry, tmp_path):
    url, _ = registry
    leader, r1 = build(tmp_path, "v1", "B1")
    sent = push(leader.releases / r1, url, tags=("live",))
    assert (sent.release, sent.blobs, sent.moved) == (r1, 4, 5)  # 2 modules, build.json, deploy.yaml; the config
    assert push(leader.releases / r1, url).moved == 0  # the registry has every blob

    host = State(tmp_path / "host").make()
    got = pull(url, "live", host.releases, host.cache)
    assert (got.release, got.digest, got.moved) == (r1, sent.digest, 5)  # and the config
    assert files(host.releases / r1) == files(leader.releases / r1)  # the same bits
    assert pull(url, "live", host.releases, host.cache).moved == 0

    leader2, r2 = build(tmp_path, "v2", "B2")  # one module changed
    sent2 = push(leader2.releases / r2, url, tags=("live",))
    assert sent2.moved == 3  # b's object, build.json (its times), the config: a's object is there already
    got2 = pull(url, "live", host.releases, host.cache)
    assert got2.release == r2 and got2.moved == 3
    assert files(host.releases / r2) == files(leader2.releases / r2)


def test_a_tampered_blob_or_an_unsafe_path_installs_nothing(registry, tmp_path):
    url, store = registry
    leader, r1 = build(tmp_path, "v1", "B1")
    push(leader.releases / r1, url, tags=("live",))
    obj = next((leader.releases / r1 / "modules").glob("b-*.so"))
    digest = hashlib.sha256(obj.read_bytes()).hexdigest()
    data = next(store.rglob(f"blobs/sha256/{digest[:2]}/{digest}/data"))
    data.write_bytes(data.read_bytes() + b"tampered")  # as a compromised registry would serve it
    host = State(tmp_path / "host").make()
    with pytest.raises(StalledError, match="arrived with other content"):
        pull(url, "live", host.releases, host.cache)
    assert not (host.releases / r1).exists()

    manifest = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{url.rsplit('/', 1)[0]}/v2/demo/manifests/live",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})).read())
    manifest["layers"][0]["annotations"]["org.opencontainers.image.title"] = "../../etc/evil"
    urllib.request.urlopen(urllib.request.Request(
        f"{url.rsplit('/', 1)[0]}/v2/demo/manifests/evil", data=json.dumps(manifest).encode(), method="PUT",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})).close()
    with pytest.raises(StalledError, match="is not a file a release holds"):
        pull(url, "evil", host.releases, host.cache)
    assert not list(host.releases.glob("r*"))
