"""The fences where root and module code meet (issue 19), each tried the way
an attacker with push access would: a module served by hotplate plants the
link, the FIFO, the forged report or the garbage file, fills the disk,
forks and detaches, reads another app, reserves and touches memory."""
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from hotplate.controller.account import app_account
from hotplate.controller.plan import load_manifest
from hotplate.controller.errors import ManifestError
from hotplate.controller.state import State
from hotplate.server.contract.layout import Layout

from .conftest import APPS, ROOT, Work, wait_for

ROUTES = ("plant", "read_file", "fork_away", "fill", "alloc", "reserve", "clone_ns", "clone3_call", "uring",
          "getfd", "send_signal", "own_pid", "env", "unix_listeners", "scribble_shares")
ATTACK = """\
app: attack
{limits}
modules:
  attack:
    source: attack.c
    config: {{detach: "{detach}", hang: "{hang}", version: "{message}"}}
    routes:
""" + "".join(f"      - {{{{path: /{r}, handler: {r}}}}}\n" for r in ROUTES)


def push_attack(work: Work, detach: str = "no", hang: str = "no", limits: str = "", message: str = "attack") -> str:
    work.commit(message, {"deploy.yaml": ATTACK.format(detach=detach, hang=hang, limits=limits, message=message),
                          "attack.c": (APPS / "attack.c").read_text()})
    return work.push()


def attacker(up, tmp_path, *extra, **kw):
    server = up(*extra, **kw)
    work = Work(tmp_path / f"work-{server.port}", str(server.state / "repo.git"))
    out = push_attack(work)
    assert "deploy succeeded" in out, out
    return server, work


def ask(server, route: str, **query) -> str:
    return server.get(f"/{route}?" + "&".join(f"{k}={v}" for k, v in query.items())).text.strip()


def account_pids(user: str) -> list[int]:
    uid = pwd.getpwnam(user).pw_uid
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _uid(p) == uid]


def _uid(proc: Path) -> int | None:
    try:
        return proc.stat().st_uid
    except OSError:
        return None


def test_no_module_code_can_answer_in_the_masters_name(up, tmp_path):
    """The master's line to the controller (run/master.sock) is listened on
    by the master alone: every process it forks closes it first. attack.c's
    hp_init fails where it can accept on a Unix socket, or, in the smoke
    check, on any socket (the app's port is the workers'): the deploys
    succeed, and a worker does not hold the master's at request time
    either (only its own hub's)."""
    server, work = attacker(up, tmp_path)
    held = ask(server, "unix_listeners").splitlines()
    assert held[-1] == "end" and not any("master.sock" in path for path in held), held
    assert "deploy succeeded" in push_attack(work, message="again")  # a smoke check and a roll more
    held = ask(server, "unix_listeners").splitlines()
    assert held[-1] == "end" and not any("master.sock" in path for path in held), held
    assert (server.state / "run" / "master.sock").stat().st_mode & 0o077 == 0


def test_garbage_on_the_workers_shared_page_costs_nothing_but_their_sizing(up, tmp_path):
    """Module code can write the page the workers size their threads by
    (serve.c): every entry taken, counts and times at their extremes. The
    workers go on answering every request, and the next deploy rolls."""
    server, work = attacker(up, tmp_path, "--workers", "2")
    for _ in range(4):  # (each worker, whichever takes the request)
        assert int(ask(server, "scribble_shares")) > 0
    with requests.Session() as one, requests.Session() as two:
        for _ in range(100):
            assert one.get(server.url + "/own_pid", timeout=5).ok and two.get(server.url + "/own_pid", timeout=5).ok
    assert "deploy succeeded" in push_attack(work, message="again")
    assert ask(server, "own_pid").isdigit()


def test_a_module_cannot_plant_anything_where_root_writes(up, tmp_path):
    """The config render directory and the run directories are root's: no
    link to the token, no FIFO, no forged report, no garbage name."""
    server, work = attacker(up, tmp_path)
    token, run = server.state / "token", server.state / "run"
    render = State(server.state).config_render
    digest = "0" * 16
    for path in (render / f"{digest}.json.tmp", render / f".{digest}.json.1.1", run / "workers" / ".exited.totals.tmp",
                 run / "metrics" / "counter_1.db"):
        assert ask(server, "plant", kind="link", path=path, target=token) == "EACCES", path
    for path in (run / "workers" / "9x.json", run / "workers" / "1.json"):
        assert ask(server, "plant", kind="file", path=path) == "EACCES", path
    worker = int(ask(server, "own_pid"))
    unused = next(p for p in range(worker + 1, worker + 10_000) if not (run / "workers" / f"{p}.stats").exists())
    assert ask(server, "plant", kind="fifo", path=run / "workers" / f"{unused}.stats") == "EACCES"
    for directory in (run / "workers", run / "metrics"):
        st = directory.stat()
        assert st.st_uid == 0 and not st.st_mode & 0o022, directory
    st = render.stat()
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o711

    r = requests.post(server.api + "/api/config", headers=server.auth(), json={"set": {"GREETING": "hi"}}, timeout=30)
    assert r.ok, r.text
    server.wait(lambda: server.status()["state"] == "Synced", what="the config set live")
    assert token.stat().st_uid == 0 and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert requests.get(server.api + "/api/deploys", headers=server.auth(), timeout=5).ok, "the token still works"
    sets = [p for p in render.iterdir() if p.suffix == ".json"]
    assert sets and all(p.stat().st_uid == 0 and stat.S_IMODE(p.stat().st_mode) == 0o440 for p in sets)
    assert "GREETING" in ask(server, "read_file", path=sets[0]), "the app's own workers read their set"

    server.stop()
    assert not render.exists(), "no plaintext config set outlives the instance"


def test_a_planted_render_directory_is_replaced(up, tmp_path):
    """The render directory's name is known in advance, in a directory anyone
    may write: what a module (or anyone) planted there first is removed."""
    state = tmp_path / "up0" / "state"
    render = State(state).config_render
    render.symlink_to(tmp_path)
    server, work = attacker(up, tmp_path)
    assert not render.is_symlink() and render.stat().st_uid == 0
    assert "was not made by hotplate" in server.log.read_text()


def test_garbage_where_root_reads_is_the_writers_fault_never_roots(up, tmp_path):
    """What an older layout (or anything) left in the run directories: a
    FIFO as a live worker's counters, a link as its report, names that are
    no pid, a metrics file that lies about its length. Status answers at
    once, deploys end, the master restarts, /metrics is 200."""
    server, work = attacker(up, tmp_path)
    workers, metrics = server.state / "run" / "workers", server.state / "run" / "metrics"
    live = os.getpid()  # a live process that is no worker
    os.mkfifo(workers / f"{live}.stats")
    (workers / f"{live}.json").symlink_to(server.state / "token")
    (workers / "9x.json").write_text("{}")
    (workers / "exited.totals").write_text("[not json")
    (metrics / "counter_77.db").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00" + b"\x9c\xff\xff\xff" * 16)
    (metrics / "histogram_78.db").write_bytes(os.urandom(4096))

    started = time.monotonic()
    status = server.status()
    assert time.monotonic() - started < 5, "status never blocks on a FIFO"
    assert live not in [w["pid"] for w in status["workers"]], "a file is no worker: gunicorn's list decides"
    assert status["health"]["state"] == "Healthy", status["health"]
    assert requests.get(server.api + "/metrics", timeout=10).status_code == 200

    out = push_attack(work, message="another")
    assert "deploy succeeded" in out or "already live" in out, out
    master = int((server.state / "run" / "server.pid").read_text())
    os.kill(master, signal.SIGKILL)
    server.wait(lambda: server.get("/own_pid").ok and server.status()["health"]["state"] != "Down",
                what="the master restarted despite the garbage", timeout=30)
    assert server.state.joinpath("token").read_text().strip() == server.token()


def test_nothing_module_code_forks_outlives_its_worker_or_the_app(up, tmp_path):
    """hp_init and a handler each leave a detached process behind (double
    fork, setsid): a replaced worker takes its with it, a stopped instance
    all of them, and a smoke check whose hp_init never returns is killed
    with everything it started."""
    server = up(env={"HOTPLATE_SMOKE_TIMEOUT": "3"})
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    assert "deploy succeeded" in push_attack(work, detach="yes")
    user = app_account(server.state)
    forked = int(ask(server, "fork_away"))
    assert Path(f"/proc/{forked}").exists()

    out = push_attack(work, detach="yes", message="v2")  # a new generation: the old workers go
    assert "deploy succeeded" in out, out
    wait_for(lambda: not Path(f"/proc/{forked}").exists(), what="the old worker's forked process gone")

    out = push_attack(work, hang="yes", message="hangs")
    assert "deploy FAILED (SmokeCheckFailed)" in out and "hp_init or constructor hangs" in out, out
    assert not any(p for p in cgroup_procs(server, "smoke")), "the hung check and its fork are gone"

    before = set(account_pids(user))
    assert before, "the app's workers run as its account"
    server.stop()
    wait_for(lambda: not account_pids(user), timeout=10, what=f"no process of {user} left")


def cgroup_procs(server, prefix: str) -> list[int]:
    from hotplate.server import cgroups
    layout = Layout(server.state)
    return [p for name in cgroups.app_tree(layout).children() if name.startswith(prefix)
            for p in cgroups.app_tree(layout, name).pids()]


def test_two_apps_on_one_host_are_two_accounts(up, tmp_path):
    """A's module cannot read B's data or secrets, nor signal B's workers;
    one account for two state directories is refused unless asked for."""
    a, work_a = attacker(up, tmp_path)
    b, work_b = attacker(up, tmp_path)
    assert app_account(a.state) != app_account(b.state)
    requests.post(b.api + "/api/config", headers=b.auth(), json={"set": {"B_SECRET": "s3cret"}, "secret": True},
                  timeout=30)
    b.wait(lambda: b.status()["state"] == "Synced", what="B's secret live")
    b_sets = list(State(b.state).config_render.iterdir())
    for path in (b.state / "data" / "jobs.db", *b_sets):
        assert ask(a, "read_file", path=path) in ("EACCES", "ENOENT"), path
    b_worker = int(ask(b, "own_pid"))
    assert ask(a, "send_signal", pid=b_worker, sig=signal.SIGKILL) == "EPERM"
    assert b.get("/own_pid").ok

    other = tmp_path / "other-state"
    refused = subprocess.run([sys.executable, "-m", "hotplate.controller.cli", "build", str(work_a.path), "--state",
                              str(other), "--user", app_account(a.state)], capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 1 and "runs the module code of" in refused.stderr, refused.stderr
    allowed = subprocess.run([sys.executable, "-m", "hotplate.controller.cli", "build", str(work_a.path), "--state",
                              str(other), "--user", app_account(a.state), "--share-user"], capture_output=True,
                             text=True, cwd=ROOT)
    assert allowed.returncode == 0, allowed.stderr


def test_the_filter_closes_namespaces_rings_and_other_processes(up, tmp_path):
    """No new namespace, no io_uring, no other process's descriptors, and
    signals only to itself: not the job runner, which runs as the same
    account (nor, with two workers, the other worker)."""
    server, work = attacker(up, tmp_path, workers=1)
    for ns in ("user", "mount", "net", "pid"):
        assert ask(server, "clone_ns", ns=ns) == "EPERM", ns
    assert ask(server, "clone3_call") == "ENOSYS"
    assert ask(server, "fork_away").isdigit(), "a plain fork still works (clone without namespace flags)"
    runner = int(subprocess.run(["pgrep", "-f", f"hotplate.server.jobs --state {server.state} "], capture_output=True,
                                text=True).stdout.split()[0])
    assert pwd.getpwuid(Path(f"/proc/{runner}").stat().st_uid).pw_name == app_account(server.state)
    assert ask(server, "send_signal", pid=runner, sig=signal.SIGSTOP) == "EPERM"
    assert "State:\tS" in Path(f"/proc/{runner}/status").read_text() or "State:\tR" in \
        Path(f"/proc/{runner}/status").read_text(), "the runner was not stopped"
    assert ask(server, "send_signal", pid=0, sig=0) == "EPERM", "not its process group"
    assert ask(server, "send_signal", pid="self", sig=0) == "ok", "itself, yes"
    for route in ("uring", "getfd"):
        r = server.get(f"/{route}?pid={runner}")
        assert r.status_code == 500 and "SIGSYS" in r.json()["error"], (route, r.text)
        server.wait(lambda: server.get("/own_pid").ok, what="a fresh worker")


def test_memory_is_bounded_while_a_call_runs(up, tmp_path):
    """max_rss is a hard bound mid-call (the kernel's, through the worker's
    cgroup), and address space is not free to reserve."""
    server = up()
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    assert "deploy succeeded" in push_attack(work, limits="limits: {max_rss: 64MiB}")
    assert ask(server, "alloc", mib=16) == "touched"
    with pytest.raises(requests.RequestException):  # over the cgroup's 128 MiB, under the address space
        server.get("/alloc?mib=400")
    server.wait(lambda: "was killed by the kernel: its memory passed its limit" in
                (server.state / "run" / "server.log").read_text(), what="the kill logged")
    assert ask(server, "reserve", gib=20) == "ENOMEM"
    assert server.wait(lambda: server.get("/own_pid").ok, what="a fresh worker serving")


def test_a_full_disk_never_stops_the_master(up, tmp_path):
    """STATE on a small ext4 file system that a module fills: the app keeps
    answering, and a master killed meanwhile comes back (it maps nothing on
    the disk and its pid file is written in place; the workers' files are
    allocated by root, which keeps the file system's reserve)."""
    state_fs, image = tmp_path / "fs", tmp_path / "state.img"
    state_fs.mkdir()
    subprocess.run(["truncate", "-s", "128M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(state_fs)], check=True)
    server = None
    try:
        server = up(state=state_fs / "state")
        work = Work(tmp_path / "work", str(server.state / "repo.git"))
        assert "deploy succeeded" in push_attack(work)
        filled = ask(server, "fill", path=server.state / "data" / "big")
        fs = os.statvfs(state_fs)
        assert int(filled.split()[0]) > 40 and fs.f_bavail * fs.f_frsize < 1 << 20, filled  # (root keeps its reserve)
        for _ in range(20):
            assert server.get("/own_pid").ok
        master = int((server.state / "run" / "server.pid").read_text())
        os.kill(master, signal.SIGKILL)
        server.wait(lambda: _pid(server) not in (None, master) and server.get("/own_pid").ok
                    and server.status()["health"]["state"] == "Healthy", what="the master back on a full disk", timeout=30)
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["umount", "-l", str(state_fs)], check=False)


def _pid(server):
    try:
        return int((server.state / "run" / "server.pid").read_text())
    except (OSError, ValueError):
        return None


def test_the_app_server_gets_only_the_environment_it_is_allowed(up, tmp_path):
    server, work = attacker(up, tmp_path, env={"CLOUD_KEY": "AKIA-sekrit", "HOTPLATE_GREETING": "x"})
    assert ask(server, "env", name="CLOUD_KEY") == "(unset)"
    assert ask(server, "env", name="HOTPLATE_GREETING") == "x" and ask(server, "env", name="PATH") != "(unset)"
    assert ask(server, "read_file", path="/proc/self/environ") == "EACCES", "not dumpable: not even its own"
    passed, _ = attacker(up, tmp_path, "--pass-env", "CLOUD_KEY", env={"CLOUD_KEY": "AKIA-sekrit"})
    assert ask(passed, "env", name="CLOUD_KEY") == "AKIA-sekrit"


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)) + "modules: *i\n"


def test_yaml_aliases_are_refused_before_anything_is_built(tmp_path):
    started = time.monotonic()
    with pytest.raises(ManifestError) as e:
        load_manifest(tmp_path, BILLION_LAUGHS)
    assert time.monotonic() - started < 1
    assert "deploy.yaml:2: not valid YAML: aliases (*name) are not allowed" in str(e.value), str(e.value)


def test_config_yaml_aliases_are_refused_too(tmp_path):
    from hotplate.controller.appconfig import ConfigStore
    from hotplate.controller.errors import StalledError
    store = ConfigStore(State(tmp_path / "state").make())
    with pytest.raises(StalledError) as e:
        store.committed(BILLION_LAUGHS.replace("modules: *i", "KEY: *i"))
    assert "aliases (*name) are not allowed" in str(e.value)


def test_a_compile_is_bounded_in_memory(tmp_path, monkeypatch):
    """A push whose C makes the compiler allocate without end fails its build
    with the bound named, instead of taking the host's memory."""
    from hotplate.controller import build
    from hotplate.controller.build import Builder
    monkeypatch.setattr(build, "COMPILE_MEMORY_MIB", 64)
    app = tmp_path / "app"
    app.mkdir()
    (app / "deploy.yaml").write_text("modules:\n  big:\n    source: big.c\n    routes:\n      - {path: /, handler: h}\n")
    rows = ",".join(["{" + ",".join(["1"] * 64) + "}"] * 4096)
    (app / "big.c").write_text("#include <hotplate.h>\nHP_MODULE;\nstatic const int t[][64] = {" + rows * 4 + "};\n"
                               "HP_EXPORT int h(hp_request *q, hp_response *r) { return hp_res_printf(r, \"%d\", "
                               "t[1][1]); }\n")
    with pytest.raises(Exception) as e:
        Builder(app, tmp_path / "cache").build(load_manifest(app))
    assert "memory bound (64 MiB, HOTPLATE_COMPILE_MEMORY_MIB)" in str(getattr(e.value, "results", [None])[0].diagnostics
                                                                        if getattr(e.value, "results", None) else e.value)


class _Plant:
    """Unpickled, it would run a shell command: what a forged answer from a
    smoke check would do to a controller that unpickles it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_smoke_check_answer_is_data_never_code(up, tmp_path):
    """hp_init runs in the smoke check's process, which holds the pipe its
    answer goes back on: it writes a pickle there first, framed as
    multiprocessing frames it. The controller reads the answer as JSON of
    a bounded size, so the forgery is an unreadable answer: the release
    fails, with why, and nothing runs."""
    import pickle
    import struct

    marker = tmp_path / "pwned"
    payload = pickle.dumps([_Plant(marker)])
    frame = struct.pack("!i", len(payload)) + payload
    c_bytes = ", ".join(str(b) for b in frame)
    server = up()
    work = Work(tmp_path / "work", str(server.state / "repo.git"))
    source = f"""\
        #include <hotplate.h>
        #include <sys/stat.h>
        #include <unistd.h>
        HP_MODULE;
        static const unsigned char forged[] = {{{c_bytes}}};
        HP_EXPORT int hp_init(hp_module *m) {{
            for (int fd = 3; fd < 256; fd++) {{
                struct stat st;
                if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode))
                    (void)!write(fd, forged, sizeof forged);
            }}
            return HP_OK;
        }}
        HP_EXPORT int hello(hp_request *req, hp_response *res) {{ return hp_res_printf(res, "hi\\n"); }}
        """
    manifest = "modules:\n  forge:\n    source: forge.c\n    routes:\n      - {path: /, handler: hello}\n"
    work.commit("forge", {"deploy.yaml": manifest, "forge.c": source})
    out = work.push()
    assert "deploy FAILED" in out and "smoke check" in out, out
    assert not marker.exists(), "the controller ran what module code wrote"
