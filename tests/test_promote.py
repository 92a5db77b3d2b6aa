"""Environments and promotion through the registry (Heroku's pipelines,
Kargo): a release verified in staging moves, bit for bit, to production,
which runs its own smoke check and gate; one that failed staging's gate is
refused with the reason; production's history names who promoted it."""
import os
import subprocess
import sys

from hotplate.controller.registry import Registry

from .conftest import ROOT, Work
from .test_controller import MANIFEST, hello, text
from .test_registry import registry  # noqa: F401  (a fixture)
from .test_tokens import make


def promote(env, token: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hotplate.controller.cli", "promote", *args, "--state", str(env.state)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "HOTPLATE_TOKEN": token})


def test_a_release_verified_in_staging_is_promoted_bit_for_bit_and_a_failed_one_is_refused(up, tmp_path, registry):
    url, _ = registry
    staging = up("--publish", url + ":staging")
    production = up("--follow", url + ":production", "--poll", "0.2")
    work = Work(tmp_path / "work", str(staging.state / "repo.git"))
    work.commit("v1", {"deploy.yaml": MANIFEST, "hello.c": hello("v1")})
    out = work.push()
    assert "deploy succeeded" in out and "as staging" in out, out
    assert not production.deploys(), "production follows its own tag: nothing until a promotion"

    alice, vera = make(staging, "alice", "deployer"), make(staging, "vera", "viewer")
    refused = promote(staging, vera, "--from", "staging", "--to", "production")
    assert refused.returncode == 1 and "'vera' is a viewer" in refused.stderr, refused.stderr
    wrong = promote(staging, alice, "--from", "qa", "--to", "production")
    assert wrong.returncode == 1 and "is the 'staging' environment" in wrong.stderr, wrong.stderr

    done = promote(staging, alice, "--from", "staging", "--to", "production")
    assert done.returncode == 0, done.stderr
    production.wait(lambda: text(production) == "v1", what="v1 in production")
    reg = Registry(url)
    assert reg.manifest("staging")[1] == reg.manifest("production")[1], "the same manifest digest: the same bits"
    v1 = staging.status()["live"]["release"]
    assert production.status()["live"]["release"] == v1
    deployed = production.wait(lambda: (d := production.deploys()[0])["finished"] and d, what="its deploy to end")
    assert deployed["actor"] == "alice (promoted from staging)" and deployed["outcome"] == "succeeded", deployed
    assert "smoke check passed" in production.cli("logs").stdout  # its own check and gate

    work.commit("unhealthy", {"hello.c": hello("v2", health=500)})
    assert "ROLLED BACK" in work.push()
    bad = staging.deploys()[0]["release"]
    no = promote(staging, alice, bad, "--from", "staging", "--to", "production")
    assert no.returncode == 1 and f"release {bad} did not pass staging's health gate" in no.stderr, no.stderr
    assert "rolled_back" in no.stderr
    assert reg.manifest("production")[0]["annotations"]["hotplate.release"] == v1 and text(production) == "v1"
