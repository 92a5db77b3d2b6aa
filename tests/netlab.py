"""Hosts of their own for fleet tests: one network namespace per host.

Each host has two links. ``eth0`` goes to a bridge where etcd, the
registry and the other hosts are (the fleet's network); ``lb0`` is a
point-to-point link to the test itself, which plays the load balancer.
Cutting a host off (:meth:`Lab.cut`) takes its fleet link down and leaves
the load balancer's: the host goes on answering requests while it cannot
reach etcd, the registry or its peers, as in a real partition.
"""
from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass

import pytest


def ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


def available() -> str | None:
    """Why namespaces cannot be used here (None: they can)."""
    if shutil.which("ip") is None:
        return "no `ip` (iproute2)"
    name = f"hpcheck{secrets.token_hex(3)}"
    try:
        ip("netns", "add", name)
        ip("netns", "del", name)
    except (subprocess.CalledProcessError, OSError) as e:
        return f"cannot make a network namespace here ({e}); the loopback fleet tests still run"
    return None


@dataclass
class Host:
    ns: str
    fleet_ip: str  # on the bridge: what peers and etcd see
    lb_ip: str     # on its link to the test: what the load balancer reaches
    veth: str      # the root side of its fleet link (cut by taking it down)


class Lab:
    """A bridge with ``gateway`` (where etcd and the registry listen) and hosts."""

    def __init__(self):
        self.tag = secrets.token_hex(2)
        self.net = 100 + secrets.randbelow(150)
        self.bridge = f"hpb{self.tag}"
        self.gateway = f"10.{self.net}.0.1"
        self.hosts: list[Host] = []
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def host(self) -> Host:
        i = len(self.hosts) + 1
        ns, veth, lb = f"hp{self.tag}h{i}", f"hpf{self.tag}{i}", f"hpl{self.tag}{i}"
        host = Host(ns, f"10.{self.net}.0.{10 + i}", f"10.{self.net}.{i}.2", veth)
        self.hosts.append(host)
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", ns=ns)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("link", "set", veth, "master", self.bridge, "up")
        ip("addr", "add", f"{host.fleet_ip}/24", "dev", "eth0", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        ip("link", "add", lb, "type", "veth", "peer", "name", "lb0", "netns", ns)
        ip("addr", "add", f"10.{self.net}.{i}.1/30", "dev", lb)
        ip("link", "set", lb, "up")
        ip("addr", "add", f"{host.lb_ip}/30", "dev", "lb0", ns=ns)
        ip("link", "set", "lb0", "up", ns=ns)
        return host

    def cut(self, host: Host) -> None:
        ip("link", "set", host.veth, "down")

    def mend(self, host: Host) -> None:
        ip("link", "set", host.veth, "up")

    def close(self) -> None:
        for host in self.hosts:  # (a veth pair goes with its end in the namespace)
            subprocess.run(["ip", "netns", "del", host.ns], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=10)


@pytest.fixture
def lab():
    why = available()
    if why:
        pytest.skip(why)
    made = Lab()
    yield made
    made.close()
