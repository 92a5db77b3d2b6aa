"""Push to live on every host: a leader (`hotplate up --publish`) and two
followers (`--follow`, polling the registry every 0.2 s), all on loopback
with a registry of the bench's own (Debian's docker-registry). A 10-module
app; 10 pushes that each change one module; the clock runs from `git push`
to the new text answering on all three hosts (polled every 5 ms).
Target: <= 1.5 s.
"""
from __future__ import annotations

import time

import requests

from hotplate.controller import localfleet

from .common import Up, git, make_app, median, scratch, stop, table, write_module

RUNS = 10
TARGET_S = 1.5


def main() -> None:
    with scratch() as tmp:
        reg, port = localfleet.registry(tmp)
        url = f"http://127.0.0.1:{port}/bench"
        (tmp / "leader").mkdir()
        hosts = [Up(tmp / "leader", "--publish", url, "--bake", "0")]
        for i in range(2):
            (tmp / f"f{i}").mkdir()
            hosts.append(Up(tmp / f"f{i}", "--follow", url, "--poll", "0.2", "--bake", "0"))
        app = make_app(tmp / "app")
        git(app, "remote", "add", "origin", str(hosts[0].state / "repo.git"))
        took = []
        try:
            git(app, "push", "-q", "origin", "main")
            for run in range(RUNS + 1):  # the first deploy builds everything: not timed
                version = f"v{run + 2}"
                if run:
                    write_module(app, run % 10, version)
                    git(app, "commit", "-qam", version)
                started = time.monotonic()
                if run:
                    git(app, "push", "-q", "origin", "main")
                want = f"m{run % 10} {version}\n" if run else "m0 v1\n"
                path = f"/m{run % 10}" if run else "/m0"
                deadline = started + 60
                for h in hosts:
                    while True:
                        try:
                            if requests.get(h.url + path, timeout=5).text == want:
                                break
                        except requests.RequestException:
                            pass
                        if time.monotonic() > deadline:
                            raise SystemExit(f"{version} did not reach {h.url}")
                        time.sleep(0.005)
                if run:
                    took.append(time.monotonic() - started)
        finally:
            for h in hosts:
                h.stop()
            stop(reg)
    ms = sorted(t * 1000 for t in took)
    table(f"git push -> new text on all 3 hosts (leader + 2 followers), one module changed, {RUNS} runs, ms",
          ["median", "p90", "max", "target"],
          [[f"{median(ms):.0f}", f"{ms[int(len(ms) * 0.9) - 1]:.0f}", f"{ms[-1]:.0f}", f"<= {TARGET_S * 1000:.0f}"]])


if __name__ == "__main__":
    main()
