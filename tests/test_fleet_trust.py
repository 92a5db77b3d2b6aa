"""A host serves only what was verified for it (issue 20): its own gate,
and in a fleet the fleet's rollout; whatever dies, the rest says so."""
import threading
from dataclasses import replace

from .conftest import wait_for
from .netlab import lab  # noqa: F401  (a fixture)
from .test_controller import first_deploy, hello, text


def test_a_controller_killed_mid_deploy_leaves_only_verified_code_serving(up, tmp_path):
    """kill -9 of the controller while v2 is live but in its gate: the
    master, which outlives it, goes back to v1 by itself (no controller
    restart). /_hotplate/ready, what a load balancer probes, says 200 on v2
    while a living controller gates it (a canary takes traffic), and only
    on v1 once that controller is gone."""
    server, work = first_deploy(up, tmp_path, bake=5)
    v1 = server.status()["live"]["release"]
    ready = server.get("/_hotplate/ready").json()
    assert (ready["ready"], ready["release"], ready["verified"]) == (True, v1, v1)
    work.commit("v2", {"hello.c": hello("v2")})
    pusher = threading.Thread(target=work.push)
    pusher.start()
    gating = server.wait(lambda: (lambda r: r.json()["release"] != v1 and [r])(server.get("/_hotplate/ready")),
                         what="v2 live, its gate running")[0]  # (a Response is falsy unless 2xx)
    assert gating.status_code == 200 and gating.json()["verified"] == v1, "v2 gated by a living controller"
    server.kill()
    log = server.state / "run" / "server.log"
    wait_for(lambda: "never verified; going back to " + v1 in log.read_text(), timeout=10,
             what="the master to see its controller gone")
    wait_for(lambda: all(text(server) == "v1" for _ in range(6)), timeout=15, what="every worker back on v1")
    assert (server.state / "run" / "fenced").exists(), "only the verified release may call itself ready"
    ready = server.get("/_hotplate/ready")
    assert ready.status_code == 200 and ready.json()["release"] == v1
    pusher.join(60)
    server.start()  # a new controller finds v1 live and verified, and deploys head again through the gate
    verified = server.wait(lambda: (lambda r: r["ready"] and r["verified"] == r["release"] != v1 and r)(
        server.get("/_hotplate/ready").json()), timeout=40, what="v2 deployed again, verified this time")
    assert verified["verified"] == verified["release"] == server.status()["live"]["release"]
    assert text(server) == "v2"


def test_only_a_failure_of_the_release_itself_fails_a_host():
    """The one derivation of a host's condition (controller/fleet.py): a
    host whose last deploy failed for its environment (a lost lease, etcd
    cut off) could not take part, which never blames the release."""
    from hotplate.controller.fleet import condition
    from hotplate.server.contract.fleet import Failure, HostReport
    lost = HostReport(release="r0", health="Healthy", failed=Failure("r1", reason="LeaderLost", outcome="errored"))
    assert condition(lost, "r1") == "Stale"
    gated = replace(lost, failed=Failure("r1", reason="RolloutFailed", outcome="rolled_back"))
    assert condition(gated, "r1") == "Failed"
    assert condition(replace(gated, release="r1", failed=None), "r1") == "Synced"
    assert condition(None, "r1") == "Missing" and condition(HostReport.load(b"[]"), "r1") == "Unreadable"
    assert condition(replace(lost, deploying="abc"), "r1") == "Progressing"


def test_fleet_up_supervises_its_hosts_and_stops_on_sigterm(tmp_path):
    """kill -9 of one host's controller: that host is started again (it
    adopts its app server), the rest keeps running; SIGTERM, even to a
    `fleet up` started in the background of a script, stops everything."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import requests

    from .conftest import ROOT, Work, free_port, free_ports
    from .test_controller import MANIFEST

    work = Work(tmp_path / "work", str(tmp_path / "nowhere"))
    work.commit("v1", {"deploy.yaml": MANIFEST, "hello.c": hello("v1")})
    base, lb, root = free_ports(20), free_port(), tmp_path / "fleet"
    log = tmp_path / "fleet.log"
    script = (f"{sys.executable} -m hotplate.controller.cli fleet up {work.path} --state {root} --hosts 3 "
              f"--port {lb} --base-port {base} > {log} 2>&1 &\necho $!")
    pid = int(subprocess.run(["sh", "-c", script], capture_output=True, text=True, cwd=ROOT).stdout)
    try:
        wait_for(lambda: requests.get(f"http://127.0.0.1:{lb}/", timeout=2).ok if "Ctrl-C" in log.read_text()
                 else False, 120, "the fleet serving through nginx")
        assert f"etcd://127.0.0.1:{base}" in log.read_text() and f"127.0.0.1:{base + 2}/app" in log.read_text()
        record = root / "host3" / "run" / "controller.json"  # (nginx answers once any host does: wait for host3)
        host3 = wait_for(lambda: record.exists() and json.loads(record.read_text())["pid"], 60, "host3's controller up")
        os.kill(host3, signal.SIGKILL)
        wait_for(lambda: "host3 is back" in log.read_text(), 60, "host3 started again", log=log.read_text())
        assert os.path.exists(f"/proc/{pid}") and requests.get(f"http://127.0.0.1:{lb}/", timeout=5).ok
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not os.path.exists(f"/proc/{pid}"), "SIGTERM stopped fleet up"
    left = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, text=True).stdout.split()
    assert not left, f"processes left running: {left}"


def test_a_follower_cut_off_mid_rollout_keeps_its_verified_release_and_converges(lab, up, tmp_path):
    """Hosts in network namespaces of their own (tests/netlab.py). A
    follower whose fleet link goes down mid-rollout: the rollout goes on
    without it and ends Done; the follower, which the load balancer still
    reaches, serves v1 (verified) all along and shows Missing in the
    leader's status; once the link is back it converges on v2."""
    from hotplate.controller import localfleet

    from .conftest import Work, terminate
    from .test_controller import MANIFEST
    from .test_fleet import rollout

    etcd, etcd_port = localfleet.etcd(tmp_path, host=lab.gateway)
    reg, reg_port = localfleet.registry(tmp_path, host=lab.gateway)
    try:
        fleet, registry = f"etcd://{lab.gateway}:{etcd_port}", f"http://{lab.gateway}:{reg_port}/app"
        work = Work(tmp_path / "work", str(tmp_path / "nowhere"))
        work.commit("v1", {"deploy.yaml": MANIFEST, "hello.c": hello("v1")})
        spots = [lab.host() for _ in range(3)]
        leader = up(str(work.path), "--fleet", fleet, "--publish", registry, "--poll", "0.3", "--host-name", "a",
                    "--wave-timeout", "20", netns=(spots[0].ns, spots[0].lb_ip))
        followers = [up("--follow", registry, "--fleet", fleet, "--poll", "0.3", "--host-name", name,
                        netns=(spot.ns, spot.lb_ip)) for name, spot in zip("bc", spots[1:])]
        for host in (leader, *followers):
            host.wait(lambda: text(host) == "v1", timeout=90, what="v1 on every host")
        cut = followers[1]
        v2 = work.commit("v2", {"hello.c": hello("v2")})
        leader.wait(lambda: rollout(leader).get("commit") == v2, timeout=60, what="the rollout of v2 to start")
        lab.cut(spots[2])
        leader.wait(lambda: rollout(leader)["state"] == "Done", timeout=60, what="the rollout to end without c")
        assert text(followers[0]) == "v2" and text(cut) == "v1", "c, cut off, serves its verified v1"
        assert cut.get("/_hotplate/ready").status_code == 200
        leader.wait(lambda: {h["host"]: h["state"] for h in leader.status()["fleet"]["hosts"]}["c"] == "Missing",
                    timeout=20, what="c Missing in the leader's view")
        assert leader.cli("status", "--exit-code").returncode == 1
        cut.wait(lambda: cut.status()["fleet"]["connected"] is False, timeout=20, what="c to say it is cut off")
        assert not [d for d in leader.deploys() if d["outcome"] != "succeeded"], "the commit is not blamed"
        lab.mend(spots[2])
        cut.wait(lambda: text(cut) == "v2", timeout=60, what="c on v2 once its link is back")
        leader.wait(lambda: {h["host"]: h["state"] for h in leader.status()["fleet"]["hosts"]}["c"] == "Synced",
                    timeout=30, what="c Synced again")
    finally:
        terminate(reg, 5)
        terminate(etcd, 5)
