"""Beyond one host (issue 11, first part): WebSocket publications across
hosts through a real nats-server; without a broker, or with one that is
down, each host keeps its own."""
from __future__ import annotations

import asyncio
import re
import time

import pytest
import requests
import websockets
from etcd3gw.client import Etcd3Client
from playwright.sync_api import expect

from hotplate.controller import localfleet
from hotplate.controller.errors import RetryableError
from hotplate.controller.fleet import TTL_S, Fleet
from hotplate.controller.localfleet import LocalFleet
from hotplate.controller.registry import RegistrySource
from hotplate.server.contract.fleet import HostReport, Rollout
from hotplate.server.contract.layout import Layout

from . import test_config
from .conftest import Work, free_port, terminate, wait_for, write_app
from .test_controller import MANIFEST, hello, text
from .test_dashboard import browser, shot, sign_in  # noqa: F401  (browser: a fixture)
from .test_registry import registry  # noqa: F401  (a fixture)
from .test_websockets import manifest, on_both_workers, run, ws_url


@pytest.fixture
def nats_url(tmp_path):
    proc, port = localfleet.nats(tmp_path)
    yield f"nats://127.0.0.1:{port}"
    terminate(proc, 5)


@pytest.fixture
def wsapp(tmp_path):
    return write_app(tmp_path / "app", manifest(), copy=("wsecho.c",))


async def joined(hosts):
    """Clients of /ws/room on host 0 and host 1, once a's worker hears what b's publishes: b's
    own connection publishes (an HTTP publication may come from host 1's other worker, whose
    joining the broker says nothing of b's)."""
    a = await websockets.connect(ws_url(hosts[0], "/ws/room"))
    b = await websockets.connect(ws_url(hosts[1], "/ws/room"))
    await a.recv(), await b.recv()  # hello
    n = 0
    while True:  # until host 0's workers have joined the broker
        n += 1
        await b.send(f"pub ping {n}")
        assert await b.recv() == f"ping {n}"
        try:
            got = await asyncio.wait_for(a.recv(), 0.2)
        except asyncio.TimeoutError:
            continue
        while got != f"ping {n}":  # earlier pings that arrived late, in order
            got = await asyncio.wait_for(a.recv(), 5)
        return a, b


def test_a_publication_on_one_host_reaches_subscribers_on_every_host(serve, wsapp, nats_url):
    hosts = [serve(wsapp, workers=2, extra_env={"HOTPLATE_NATS": nats_url}) for _ in range(2)]

    async def go():
        a, b = await joined(hosts)
        for i in range(20):
            await b.send(f"pub from B {i}")
        for i in range(20):
            await a.send(f"pub from A {i}")
        for ws in (a, b):  # each publisher's messages in its order, each once; the two interleave
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(40)]
            for host in "AB":
                assert [m for m in got if m.startswith(f"from {host}")] == [f"from {host} {i}" for i in range(20)]
        with pytest.raises(asyncio.TimeoutError):  # nothing twice
            await asyncio.wait_for(a.recv(), 0.3)
        await a.close()
        await b.close()

    run(go())


def test_a_client_that_reconnects_to_another_host_gets_what_was_published_meanwhile(serve, wsapp, nats_url):
    hosts = [serve(wsapp, workers=2, extra_env={"HOTPLATE_NATS": nats_url}) for _ in range(2)]

    async def go():
        a, b = await joined(hosts)
        await b.send("pub before 1")
        await b.send("pub before 2")
        for ws in (a, b):  # the publisher's own connection gets them too
            assert [await asyncio.wait_for(ws.recv(), 5) for _ in range(2)] == ["before 1", "before 2"]
        await a.send("position")
        position = await asyncio.wait_for(a.recv(), 5)
        assert position.startswith("pos:") and len(position) <= 4 + 1024, position
        await a.close()  # host 0's client goes away ...
        for i in range(5):  # ... publications meanwhile, on host 1 ...
            await b.send(f"pub missed {i}")
        assert [await asyncio.wait_for(b.recv(), 5) for _ in range(5)] == [f"missed {i}" for i in range(5)]
        # ... and it comes back on host 1 with its position: what it missed, once, in order
        back = await websockets.connect(ws_url(hosts[1], "/ws/room?resume=" + position[4:]))
        assert (await back.recv()).startswith("hello")
        assert [await asyncio.wait_for(back.recv(), 5) for _ in range(5)] == [f"missed {i}" for i in range(5)]
        fresh = await websockets.connect(ws_url(hosts[1], "/ws/room"))  # without a position: nothing of it
        assert (await fresh.recv()).startswith("hello")
        for ws in (back, fresh):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3)
        await b.send("pub after")
        for ws in (back, fresh, b):
            assert await asyncio.wait_for(ws.recv(), 5) == "after"
        bad = await websockets.connect(ws_url(hosts[1], "/ws/room?resume=not!a!position"))
        await bad.recv()  # hello
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(bad.recv(), 5)
        assert closed.value.rcvd.code == 4001
        for ws in (back, fresh, b):
            await ws.close()

    run(go())


def test_without_a_broker_publications_stay_on_the_host_and_still_work(serve, wsapp):
    server = serve(wsapp, workers=2, extra_env={"HOTPLATE_NATS": f"nats://127.0.0.1:{free_port()}"})

    async def go():
        clients = await on_both_workers(server, "/ws/room")
        await clients[0].send("pub local")
        assert [await asyncio.wait_for(c.recv(), 5) for c in clients] == ["local"] * len(clients)
        for c in clients:
            await c.close()

    run(go())
    assert "publications stay on this host" in server.output()


def test_the_leader_builds_once_and_followers_pull_what_it_puts_live(up, tmp_path, registry):
    url, _ = registry
    leader = up("--publish", url)
    followers = [up("--follow", url, "--poll", "0.2") for _ in range(2)]
    work = Work(tmp_path / "work", str(leader.state / "repo.git"))
    for version in ("v1", "v2"):
        work.commit(version, {"deploy.yaml": MANIFEST, "hello.c": hello(version)})
        out = work.push()
        assert "deploy succeeded" in out and "as live" in out, out
        for host in (leader, *followers):
            host.wait(lambda: text(host) == version, what=f"{version} on every host")
    releases = {h.status()["live"]["release"] for h in (leader, *followers)}
    assert len(releases) == 1  # the same release, the same bits
    for f in followers:
        deploys = f.deploys()
        assert all(d["modules"] == [] for d in deploys), "a follower compiled something"
        assert "pulled release" in f.cli("logs", str(deploys[-1]["id"])).stdout  # the first, ended
        assert not (f.state / "repo.git").exists()
    good = work.git("rev-parse", "HEAD").stdout.strip()
    work.commit("bad", {"hello.c": hello("bad", health=503)})  # fails the leader's health gate
    out = work.push()
    assert "deploy ROLLED BACK" in out and "as live" not in out, out
    # the leader is the canary: a release that fails its gate is never published, so no other host gets it
    registry_live = RegistrySource(url)
    registry_live.fetch()
    assert registry_live.tip() == good
    for f in followers:
        assert text(f) == "v2"
    assert leader.cli("rollback").returncode == 0  # the fleet follows a rollback too
    for host in (leader, *followers):
        host.wait(lambda: text(host) == "v1", what="the rollback on every host")


def test_hosts_cut_off_from_the_registry_keep_serving_and_converge_when_it_is_back(up, tmp_path):
    reg, port = localfleet.registry(tmp_path)
    url = f"http://127.0.0.1:{port}/demo"
    try:
        leader = up("--publish", url)
        follower = up("--follow", url, "--poll", "0.2")
        work = Work(tmp_path / "work", str(leader.state / "repo.git"))
        work.commit("v1", {"deploy.yaml": MANIFEST, "hello.c": hello("v1")})
        assert "as live" in work.push()
        follower.wait(lambda: text(follower) == "v1", what="v1 on the follower")
        terminate(reg, 5)  # the registry goes away
        work.commit("v2", {"hello.c": hello("v2")})
        out = work.push()
        assert "deploy succeeded" in out and "FAILED" in out and "tried again" in out, out
        follower.wait(lambda: "RegistryUnreachable" in (follower.status()["last_error"] or ""),
                      what="the follower to say it cannot reach the registry")
        assert text(follower) == "v1"  # and keep serving
        reg, _ = localfleet.registry(tmp_path, port)  # back: the leader publishes v2 by itself, the follower converges
        follower.wait(lambda: text(follower) == "v2", what="v2 on the follower once the registry is back")
        late = up("--follow", url, "--poll", "0.2")  # a host that joins converges too
        late.wait(lambda: text(late) == "v2", what="v2 on a host that joined")
    finally:
        terminate(reg, 5)


@pytest.fixture
def etcd_url(tmp_path):
    proc, port = localfleet.etcd(tmp_path)
    yield f"etcd://127.0.0.1:{port}"
    terminate(proc, 5)


def test_one_candidate_leads_and_another_takes_over_when_it_is_killed(up, tmp_path, registry, etcd_url):
    url, _ = registry
    work = Work(tmp_path / "work", str(tmp_path / "nowhere"))
    work.commit("v1", {"deploy.yaml": MANIFEST, "hello.c": hello("v1")})
    candidates = [up(str(work.path), "--fleet", etcd_url, "--publish", url, "--poll", "0.3") for _ in range(2)]
    follower = up("--follow", url, "--poll", "0.2")
    for host in (*candidates, follower):
        host.wait(lambda: text(host) == "v1", what="v1 on every host")
    roles = [c.status()["role"] for c in candidates]
    assert sorted(roles) == ["follower", "leader"], roles
    leader, other = candidates if roles[0] == "leader" else candidates[::-1]
    assert any(d["modules"] for d in leader.deploys()) and not any(d["modules"] for d in other.deploys()), \
        "only the leader compiled"
    leader.kill()  # kill -9: its lease expires
    other.wait(lambda: other.status()["role"] == "leader", timeout=20, what="the other candidate to lead")
    work.commit("v2", {"hello.c": hello("v2")})
    for host in (other, follower):
        host.wait(lambda: text(host) == "v2", what="v2 built by the new leader, everywhere")
    assert any(d["modules"] for d in other.deploys())  # it built v2


def test_hotplate_fleet_up_runs_a_whole_fleet_behind_nginx(tmp_path):
    work = Work(tmp_path / "work", str(tmp_path / "nowhere"))
    work.commit("v1", {"deploy.yaml": MANIFEST, "hello.c": hello("v1")})
    fleet = LocalFleet(tmp_path / "fleet", str(work.path), hosts=3, port=free_port()).start()
    procs = list(fleet.procs)  # etcd, registry, NATS, 3 hosts, nginx
    try:
        lb = fleet.urls["load balancer"]
        hosts = [f"http://127.0.0.1:{p}/" for p in fleet.apps]

        def everywhere(version: str) -> bool:
            try:
                return all(requests.get(u, timeout=2).text.split(" from ")[0] == version for u in [lb, *hosts])
            except requests.RequestException:
                return False
        wait_for(lambda: everywhere("v1"), 90, "v1 on every host and through nginx")
        work.commit("v2", {"hello.c": hello("v2")})
        wait_for(lambda: everywhere("v2"), 60, "v2 on every host and through nginx")
    finally:
        fleet.stop()
    assert len(procs) == 7 and all(p.poll() is not None for p in procs), "stop leaves nothing running"


def health_on(version: str) -> str:
    """hello.c whose health route fails only on a host started with HOTPLATE_TEST_UNHEALTHY set."""
    return hello(version, health='getenv("HOTPLATE_TEST_UNHEALTHY") ? 503 : 200').replace(
        "#include <unistd.h>", "#include <unistd.h>\n#include <stdlib.h>")


def fleet_of_three(up, tmp_path, registry_url: str, etcd_url: str, *extra: str, follower_env: dict | None = None):
    """Candidates c1 and c2 (build from a local repository), follower b; v1 live on all three.
    Waves after the leader: b, then the other candidate (hosts in name order)."""
    work = Work(tmp_path / "work", str(tmp_path / "nowhere"))
    work.commit("v1", {"deploy.yaml": MANIFEST, "hello.c": health_on("v1")})
    candidates = [up(str(work.path), "--fleet", etcd_url, "--publish", registry_url, "--poll", "0.3",
                     "--host-name", f"c{i}", *extra) for i in (1, 2)]
    follower = up("--follow", registry_url, "--fleet", etcd_url, "--poll", "0.2", "--host-name", "b", *extra,
                  env=follower_env)
    for host in (*candidates, follower):
        host.wait(lambda: text(host) == "v1", timeout=60, what="v1 on every host")
    leader = candidates[0].wait(lambda: next((c for c in candidates if c.status()["role"] == "leader"), None),
                                what="a leader")
    other = candidates[1] if leader is candidates[0] else candidates[0]
    return work, leader, other, follower


def rollout(host) -> dict:
    return host.status()["fleet"]["rollout"] or {}


def last_deploy_log(host) -> str:
    return host.cli("logs", str(host.deploys()[0]["id"])).stdout


def test_a_push_rolls_out_in_waves_and_a_failed_wave_rolls_the_whole_fleet_back(up, tmp_path, registry, etcd_url,
                                                                                  browser):
    url, _ = registry
    work, leader, other, follower = fleet_of_three(up, tmp_path, url, etcd_url,
                                                   follower_env={"HOTPLATE_TEST_UNHEALTHY": "1"})
    hosts = (leader, other, follower)
    leader_name, other_name = leader.status()["fleet"]["host"], other.status()["fleet"]["host"]
    v2 = work.commit("v2", {"hello.c": hello("v2")})
    for host in hosts:
        host.wait(lambda: text(host) == "v2", timeout=60, what="v2 on every host")
    leader.wait(lambda: (r := rollout(leader)).get("state") == "Done" and r["commit"] == v2, what="Done")
    assert rollout(leader)["waves"] == [[leader_name], ["b"], [other_name]]
    log = last_deploy_log(leader)
    for line in ("published r", "wave 1 of 2: b", "b serves r", f"wave 2 of 2: {other_name}", "fleet: 3 hosts serve",
                 "deploy succeeded"):
        assert line in log, log
    assert all(h["state"] == "Synced" for h in leader.status()["fleet"]["hosts"]), leader.status()["fleet"]
    shown = follower.cli("status").stdout
    assert "rollout:  Done" in shown and "wave 2 of 2" in shown and "\nb " in shown, shown
    # The wave-2 host pulled and smoke-checked v2 while wave 1 rolled: its own wave fetched nothing.
    pulled = next(d for d in other.deploys() if d["commit_sha"] == v2)
    log = other.cli("logs", str(pulled["id"])).stdout
    assert re.search(r"pulled release r\w+ from .*: 0 of \d+ blobs fetched", log), log

    # Healthy on the canary, unhealthy on b (wave 1): the whole fleet goes back to v2, and c2 (wave 2) never gets it.
    bad = work.commit("bad", {"hello.c": health_on("bad")})
    leader.wait(lambda: rollout(leader).get("state") == "RolledBack", timeout=60, what="the rollout to end RolledBack")
    for host in hosts:
        host.wait(lambda: text(host) == "v2", timeout=60, what="v2 on every host again")
    ended = leader.wait(lambda: next((d for d in leader.deploys() if d["commit_sha"] == bad and d["finished"]), None),
                        what="the leader's deploy of the bad commit to end")
    assert (ended["outcome"], ended["reason"]) == ("rolled_back", "FleetGateFailed"), ended
    assert "wave 1 of 2: b" in last_deploy_log(leader) and "b could not serve" in last_deploy_log(leader)
    assert "FleetGateFailed" in rollout(leader)["reason"]
    assert not any(d["commit_sha"] == bad for d in other.deploys()), "a host of a later wave got the failed release"
    assert any(d["commit_sha"] == bad and d["outcome"] != "succeeded" for d in follower.deploys())
    leader.wait(lambda: all(h["state"] in ("Synced", "Failed") for h in leader.status()["fleet"]["hosts"]),
                what="every host back where the fleet wants it")
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # and the dashboard's fleet page says so
    page.goto(leader.api + "/#/fleet")
    sign_in(page, leader.token(), "admin (admin)")
    expect(page.locator("#hosts tbody tr")).to_have_count(3)
    expect(page.locator("#hosts tbody")).to_contain_text("b")
    expect(page.locator("#rollout")).to_contain_text("RolledBack")
    expect(page.locator("#rollout")).to_contain_text("FleetGateFailed")
    expect(page.locator("#rollout .progress-waves span")).to_have_count(3)
    shot(page, "fleet")

    # Unhealthy on the canary: no wave starts, no other host ever serves it.
    canary_bad = work.commit("bad on the canary", {"hello.c": hello("worse", health=503)})
    leader.wait(lambda: any(d["commit_sha"] == canary_bad and d["finished"] for d in leader.deploys()),
                what="the canary's deploy to end")
    assert "wave 1" not in last_deploy_log(leader)
    for host in (other, follower):
        assert not any(d["commit_sha"] == canary_bad for d in host.deploys())
        assert text(host) == "v2"


@pytest.mark.parametrize("instant", ["switched", "baking", "wave"])
def test_a_leader_killed_mid_rollout_is_replaced_and_its_rollout_ends(up, tmp_path, registry, etcd_url, instant):
    """kill -9 of the leader's controller at three instants of a rollout:
    right after it switched to the new release (its own gate not passed, no
    rollout written yet), while its canary bakes, and once a wave admitted
    another host. Afterwards no host serves what the fleet did not verify,
    status shows every host, and the fleet ends on the tip (issue 20)."""
    url, _ = registry
    work, leader, other, follower = fleet_of_three(up, tmp_path, url, etcd_url, "--wave-bake", "3")
    v1 = leader.status()["live"]["release"]
    v2 = work.commit("v2", {"hello.c": hello("v2")})
    if instant == "switched":
        leader.wait(lambda: Layout(leader.state).live_release() not in (None, v1), timeout=60,
                    what="the leader switched to v2")
    else:
        other.wait(lambda: (r := rollout(other)).get("commit") == v2 and r["state"] == "Progressing" and
                   (instant == "baking" or r["wave"] >= 1), timeout=60, what=f"the rollout of v2 ({instant})")
    lost = leader.status()["fleet"]["host"]
    before = max(d["id"] for d in other.deploys())
    leader.kill()
    killed = time.monotonic()
    # its app server outlives it: it goes back to v1, the release the fleet verified, by itself
    wait_for(lambda: (leader.state / "run" / "fenced").exists(), 5, "the master to fence itself (its 0.5 s look)")
    wait_for(lambda: text(leader) == "v1", 15, "the killed leader's server back on the verified v1")
    for _ in range(10):  # (a v2 worker may still be draining: it answers, but never ready)
        ready = leader.get("/_hotplate/ready")
        assert ready.status_code != 200 or ready.json()["release"] == v1, "a load balancer sees only verified code"
    other.wait(lambda: other.status()["role"] == "leader", timeout=20, what="the other candidate to lead")
    took = time.monotonic() - killed
    assert took < TTL_S + 3, f"the new leader took {took:.1f}s"

    if instant != "switched":  # (right after the switch, no rollout of v2 was written: none to end)
        def abandoned():
            ended = [d for d in other.deploys() if d["trigger"] == "fleet" and d["finished"] and d["id"] > before]
            return next((d for d in ended
                         if f"begun by {lost} stopped at wave" in other.cli("logs", str(d["id"])).stdout), None)
        ended = other.wait(abandoned, timeout=30, what="the new leader to end the rollout it found")
        assert ended["outcome"] == "succeeded", ended
    # then it deploys the tip itself, canary first: the fleet ends on v2, verified by the new leader's waves
    other.wait(lambda: (r := rollout(other)).get("state") == "Done" and r["leader"] != lost and r["commit"] == v2,
               timeout=90, what="the new leader's rollout of v2 to end")  # (one read: the key changes meanwhile)
    for host in (other, follower):
        assert text(host) == "v2"
    assert text(leader) == "v1", "the killed host never serves what the fleet did not verify"
    shown = {h["host"]: h for h in other.status()["fleet"]["hosts"]}
    assert shown[lost]["state"] == "Missing" and shown[lost]["since"], shown
    assert other.cli("status", "--exit-code").returncode == 1, "a Missing host is not all well"


def test_hosts_cut_off_from_etcd_keep_serving_and_converge_when_it_is_back(up, tmp_path, registry):
    url, _ = registry
    proc, port = localfleet.etcd(tmp_path)
    etcd_url = f"etcd://127.0.0.1:{port}"
    try:
        work, leader, other, follower = fleet_of_three(up, tmp_path, url, etcd_url)
        terminate(proc, 5)  # etcd goes away
        for host in (leader, other, follower):
            host.wait(lambda: not host.status()["fleet"]["connected"], what="every host to see etcd gone")
        leader.wait(lambda: leader.status()["role"] == "follower", what="the leader to stop leading")
        v2 = work.commit("v2", {"hello.c": hello("v2")})
        for host in (leader, other, follower):
            host.wait(lambda: "EtcdUnreachable" in (host.status()["last_error"] or ""), what="the host to say why")
            assert text(host) == "v1" and "CUT OFF from etcd" in host.cli("status").stdout
        proc, _ = localfleet.etcd(tmp_path, port)  # back, with its data
        for host in (leader, other, follower):
            host.wait(lambda: text(host) == "v2", timeout=60, what="v2 everywhere once etcd is back")
        assert rollout(follower)["commit"] == v2
        follower.wait(lambda: rollout(follower)["state"] == "Done", timeout=60, what="the rollout of v2 to end")
        for host in (leader, other, follower):  # a leadership change is never the commit's fault (issue 20)
            blamed = [d for d in host.deploys() if d["outcome"] in ("failed", "rolled_back")]
            assert not blamed, blamed
        late = up("--follow", url, "--fleet", etcd_url, "--poll", "0.2", "--host-name", "late")
        late.wait(lambda: text(late) == "v2", timeout=60, what="v2 on a host that joined")
        late.wait(lambda: {h["host"]: h["state"] for h in late.status()["fleet"]["hosts"]}.get("late") == "Synced",
                  what="the new host Synced in the fleet's view")
    finally:
        terminate(proc, 5)


def greeting(host) -> str | None:
    """GREETING as the config test's module shows it; None while the host has no release to show it."""
    r = host.get("/")
    if not r.ok or "GREETING=" not in r.text:
        return None
    return dict(line.split("=", 1) for line in r.text.splitlines() if "=" in line)["GREETING"]


def test_config_set_on_the_leader_reaches_every_host_encrypted_to_each(up, tmp_path, registry, etcd_url):
    url, storage = registry
    work = Work(tmp_path / "work", str(tmp_path / "nowhere"))
    work.commit("v1", {"deploy.yaml": test_config.MANIFEST, "cfg.c": test_config.MODULE})
    leader = up(str(work.path), "--fleet", etcd_url, "--publish", url, "--poll", "0.3", "--host-name", "a")
    follower = up("--follow", url, "--fleet", etcd_url, "--poll", "0.2", "--host-name", "b")
    for host in (leader, follower):
        host.wait(lambda: greeting(host) == "(none)", timeout=60, what="v1 everywhere")
    leader.wait(lambda: leader.status()["role"] == "leader", what="a leads")
    done = leader.cli("config", "set", "--secret", "GREETING=s3cret-greeting", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    for host in (leader, follower):
        host.wait(lambda: greeting(host) == "s3cret-greeting", timeout=60, what="the new set on every host")
    follower.wait(lambda: follower.status()["state"] == "Synced", what="the follower Synced, config and all")
    blobs = [p.read_bytes() for p in storage.rglob("data") if p.is_file()]
    assert blobs and not any(b"s3cret-greeting" in b for b in blobs), "the registry holds the secret in plaintext"


def test_only_the_holder_of_the_lease_can_write_the_rollout(etcd_url):
    """Two candidates that both think they lead, for a moment (one lost its
    lease and does not know yet): only the holder's rollout is written."""
    fleets = [Fleet(etcd_url, "fenced", name, candidate=True, report=HostReport) for name in ("x", "y")]
    try:
        leader = wait_for(lambda: next((f for f in fleets if f.leading.is_set()), None), 10, "a leader")
        other = fleets[1] if leader is fleets[0] else fleets[0]
        mine = Rollout({"release": "r000000000001"}, None, [[leader.host]], leader.host)
        leader.put_rollout(mine)
        other.leading.set()  # believes it leads
        with pytest.raises(RetryableError, match="no longer leads"):
            other.put_rollout(Rollout({"release": "r000000000002"}, None, [[other.host]], other.host))
        assert not other.leading.is_set()
        assert leader.rollout().target.release == "r000000000001"
    finally:
        for f in fleets:
            f.stop()


def test_garbage_in_etcd_leaves_every_host_serving_and_status_says_so(up, tmp_path, registry, etcd_url):
    url, _ = registry
    work = Work(tmp_path / "work", str(tmp_path / "nowhere"))
    work.commit("v1", {"deploy.yaml": MANIFEST, "hello.c": hello("v1")})
    leader = up(str(work.path), "--fleet", etcd_url, "--publish", url, "--poll", "0.3", "--host-name", "a")
    follower = up("--follow", url, "--fleet", etcd_url, "--poll", "0.2", "--host-name", "b")
    for host in (leader, follower):
        host.wait(lambda: text(host) == "v1", timeout=60, what="v1 everywhere")
    leader.wait(lambda: rollout(leader).get("state") == "Done", what="the first rollout to end")
    client = etcd_client(etcd_url)
    client.put("/hotplate/demo/rollout", "{not json")
    client.put("/hotplate/demo/hosts/intruder", "\xff garbage")
    follower.wait(lambda: "BadRollout" in (follower.status()["last_error"] or ""), what="the follower to say why")
    assert "not a rollout" in follower.status()["fleet"]["error"] and text(follower) == "v1"
    shown = {h["host"]: h["state"] for h in leader.status()["fleet"]["hosts"]}
    assert shown["intruder"] == "Unreadable"  # shown, not a crash; and no wave waits for it
    work.commit("v2", {"hello.c": hello("v2")})  # the leader's next rollout replaces the garbage
    for host in (leader, follower):
        host.wait(lambda: text(host) == "v2", timeout=60, what="v2 everywhere")
    follower.wait(lambda: rollout(follower).get("state") == "Done", what="a rollout in place of the garbage")


def etcd_client(etcd_url: str) -> Etcd3Client:
    host, port = etcd_url.removeprefix("etcd://").split(":")
    return Etcd3Client(host, int(port), timeout=2)
