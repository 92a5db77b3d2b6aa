"""A model-based checker of the operator's promises (issue 21).

Hypothesis drives random sequences of real operator actions (pushes good
and bad, config, rollback, resume, revert, retry, sync, kills, a controller
restart) against a real ``hotplate up``, and after every step checks what
the README promises:

- every push returns within :data:`PUSH_S` with a final line that says how
  it ended (went live, FAILED, ROLLED BACK) or why nothing was deployed;
- every ``--wait`` exits with the code the history then records;
- what the app answers (its text and a config value) is what ``status``
  says is live, and ``status --exit-code`` agrees with ``status``;
- no process outlives the instance once it stops.

The model keeps, for each release it has seen go live, what it must
answer: a release id that ``status`` names is checked against it, a new
one is learned from the action that made it. ``tests/test_checker.py``
runs it in CI with a few bounded examples; ``scripts/checker`` runs it as
long as you like (``HOTPLATE_CHECKER_EXAMPLES``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hotplate.server import pidfile

from .conftest import Up, Work, wait_for

#: Seconds a push may take before the checker calls it hung.
PUSH_S = 30

MANIFEST = """\
    modules:
      app:
        source: app.c
        health: /health
        routes:
          - {path: /, handler: hello}
          - {path: /health, handler: health}
    """

#: How a push may end: its last line (after ``remote: hotplate: ``).
FINAL = re.compile(r"^(deploy succeeded: .* went live|deploy FAILED \(|deploy ROLLED BACK \(|not deployed|"
                   r"already live|the controller is not running|a newer push \(|this commit is no longer on the branch)")


def app_source(text: str, health: int = 200, broken: bool = False) -> str:
    return f"""\
        #include <hotplate.h>
        HP_MODULE;
        HP_EXPORT int hello(hp_request *req, hp_response *res) {{
            const char *greeting = hp_config("GREETING");
            return hp_res_printf(res, "{text} %s\\n", greeting ? greeting : "-");
        }}
        HP_EXPORT int health(hp_request *req, hp_response *res) {{
            hp_res_status(res, {health});
            return HP_OK{'' if not broken else ' +'};
        }}
        """


class Promises(RuleBasedStateMachine):
    """One real instance per example; the model is ``answers``."""

    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="hotplate-checker-"))
        self.tmp.chmod(0o711)  # (the app's account passes through to the state directory)
        self.server = Up(self.tmp / "up", bake=0.3)
        self.work = Work(self.tmp / "work", str(self.server.state / "repo.git"))
        self.version, self.greeting = 1, None
        self.head: str | None = "v1"  # the text of the branch tip, if it is good code
        self.trees: list[str | None] = ["v1"]  # each commit's text (None: bad code), oldest first
        self.work.commit("v1", {"deploy.yaml": MANIFEST, "app.c": app_source("v1")})
        self.push(expect="deploy succeeded")
        self.answers: dict[str, str] = {}  # release -> what its app answers
        self.learn("v1 -")

    # -- helpers -----------------------------------------------------------

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return self.server.cli(*args)

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)

    def answer(self) -> str:
        return self.server.get("/").text.strip()

    def pinned(self) -> bool:
        return bool(self.status()["pinned"])

    def push(self, expect: str | None = None) -> str:
        started = time.monotonic()
        out = self.work.push()
        took = time.monotonic() - started
        assert took < PUSH_S, f"the push took {took:.0f}s"
        lines = [line.split("hotplate: ", 1)[1].strip() for line in out.splitlines() if "hotplate: " in line]
        assert lines and FINAL.match(lines[-1]), f"the push ended without saying how:\n{out}"
        if expect:
            assert lines[-1].startswith(expect), f"expected {expect!r}:\n{out}"
        return lines[-1]

    def settle(self) -> dict:
        """Status once nothing is deploying (a kill, a sync: the loop acts on its own) and the app
        serves: Down is a moment of its supervisor's (it comes back by itself), never a state to stay."""
        return wait_for(lambda: (lambda s: s if s["state"] != "Progressing" and not s.get("deploying") and
                                 s["health"]["state"] in ("Healthy", "Degraded") else None)(self.status()),
                        timeout=60, what="the controller to settle and the app to serve")

    def learn(self, text: str) -> None:
        """What the live release answers, if it is new to the model."""
        live = self.settle()["live"]["release"]
        self.answers.setdefault(live, text)

    def wait_code(self, code: int) -> None:
        """``--wait``'s exit code against what the history records."""
        last = json.loads(self.cli("history", "--json").stdout)[0]
        want = {"succeeded": 0}.get(last["outcome"], 1)
        assert code == want, f"--wait exited {code}, the history says {last['outcome']} ({last.get('reason')})"

    def master(self) -> int:
        return wait_for(lambda: pidfile.read(self.server.state / "run" / "server.pid"), what="the master's pid")

    def tip(self, text: str | None) -> None:
        self.head = text
        self.trees.append(text)

    def after_wait(self, done: subprocess.CompletedProcess, text: str | None) -> None:
        """A ``--wait`` ended: its code is the history's; a new release answers ``text``."""
        assert done.returncode in (0, 1, 3), done.stdout + done.stderr
        if done.returncode == 3:
            assert self.pinned() and "pinned" in done.stdout, done.stdout
            return
        self.wait_code(done.returncode)
        if done.returncode == 0 and text:
            self.learn(f"{text} {self.greeting or '-'}")

    # -- rules -------------------------------------------------------------

    @rule()
    def push_docs(self):
        self.work.commit("docs only", {"README.md": f"notes {len(self.trees)}\n"})
        self.tip(self.head)
        self.push()
        if self.head and not self.pinned():
            self.learn(f"{self.head} {self.greeting or '-'}")

    @precondition(lambda self: len(self.trees) > 1)
    @rule()
    def revert(self):
        done = self.cli("revert", "--wait", "--timeout", "30", "--force")
        self.work.git("pull", "-q", "--no-rebase", "origin", "main")
        self.tip(self.trees[-2])
        self.after_wait(done, self.head)

    @rule()
    def retry(self):
        before = json.loads(self.cli("history", "--json").stdout)[0]["id"]
        done = self.cli("retry")
        if done.returncode == 0:
            waited = self.cli("wait", "--timeout", "30")
            self.after_wait(waited, self.head)
        else:
            assert json.loads(self.cli("history", "--json").stdout)[0]["id"] == before, "a refused retry deployed"

    @rule()
    def sync(self):
        done = self.cli("sync", "--wait", "--timeout", "30")
        if done.returncode != 1 or not self.pinned():  # (sync says so at once when pinned)
            self.after_wait(done, self.head)

    @rule()
    def kill_master(self):
        os.kill(self.master(), signal.SIGKILL)
        self.server.wait(lambda: self.server.get("/_hotplate/health").ok, timeout=60, what="the app back by itself")

    @rule()
    def stop_master(self):
        pid = self.master()
        os.kill(pid, signal.SIGSTOP)
        time.sleep(2)  # (the fault itself: a master that does not run for a while)
        os.kill(pid, signal.SIGCONT)
        self.server.wait(lambda: self.server.get("/_hotplate/health").ok, timeout=60, what="the app answering")

    @rule()
    def push_good(self):
        self.version += 1
        text = f"v{self.version}"
        self.work.commit(text, {"app.c": app_source(text)})
        pinned = self.pinned()
        self.tip(text)
        self.push(expect="not deployed" if pinned else "deploy succeeded")
        if not pinned:
            self.learn(f"{text} {self.greeting or '-'}")

    @rule()
    def push_broken(self):
        self.work.commit("does not compile", {"app.c": app_source(f"x{len(self.trees)}", broken=True)})
        self.tip(None)
        self.push(expect="not deployed" if self.pinned() else "deploy FAILED")

    @rule()
    def push_unhealthy(self):
        self.work.commit("fails its health route", {"app.c": app_source(f"sick{len(self.trees)}", health=500)})
        self.tip(None)
        self.push(expect="not deployed" if self.pinned() else "deploy ROLLED BACK")

    @rule(value=st.sampled_from(["hello", "bonjour"]))
    def config_set(self, value):
        code = self.live_text()
        done = self.cli("config", "set", f"GREETING={value}", "--wait", "--timeout", "30")
        assert done.returncode in (0, 1), done.stdout + done.stderr
        self.greeting = value
        if not self.pinned():
            self.wait_code(done.returncode)
            if done.returncode == 0:
                self.learn(f"{code} {value}")

    @precondition(lambda self: len(self.answers) > 1)
    @rule(data=st.data())
    def rollback(self, data):
        to = data.draw(st.sampled_from([None, *sorted(self.answers)]), label="to")
        done = self.cli("rollback", "--wait", "--timeout", "30", *(["--to", to] if to else []))
        assert done.returncode in (0, 1), done.stdout + done.stderr

    @rule()
    def resume(self):
        was = self.pinned()
        done = self.cli("resume", "--wait", "--timeout", "30")
        assert done.returncode in (0, 1), done.stdout + done.stderr
        if was and done.returncode == 0 and self.head:
            self.learn(f"{self.head} {self.greeting or '-'}")

    @rule()
    def kill_worker(self):
        pids = [w["pid"] for w in self.status()["workers"]]
        os.kill(pids[0], signal.SIGKILL)
        self.server.wait(lambda: self.server.get("/_hotplate/health").ok, timeout=30, what="a worker again")

    @rule()
    def restart_controller(self):
        self.server.kill()
        self.server.start()

    # -- invariants --------------------------------------------------------

    def live_text(self) -> str:
        """The code part of what the live release answers (the model's)."""
        return self.answers[self.settle()["live"]["release"]].split()[0]

    @invariant()
    def the_app_answers_what_status_says(self):
        shown = self.cli("status", "--json", "--exit-code")  # (one answer: the JSON and the code agree)
        s = json.loads(shown.stdout)
        unwell = s["state"] in ("Failed", "OutOfSync") or s["health"]["state"] in ("Degraded", "Down")
        assert shown.returncode == (1 if unwell else 0), \
            f"status --exit-code {shown.returncode} for {s['state']}/{s['health']['state']}"
        s = self.settle()
        live = s["live"]["release"]
        assert live in self.answers, f"status names {live}, which no action made live ({self.answers})"
        got = self.answer()
        assert got == self.answers[live], f"status says {live} is live ({self.answers[live]!r}); the app says {got!r}"

    def teardown(self):
        try:
            self.server.stop()
            left = subprocess.run(["pgrep", "-f", str(self.server.state)], capture_output=True,
                                  text=True).stdout.split()
            assert not left, f"processes outlived the instance: {left}"
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
