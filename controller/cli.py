"""The ``hotplate`` command.

``up``, ``dev``, ``serve`` and ``build`` run things; the other commands talk
to a running ``hotplate up`` through its API (``STATE/run/controller.json``).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import argcomplete

from hotplate.server.config import ServerConfig

from . import devloop
from .account import keep_to_itself, worker_user
from .deploy import Attempt, build_release, format_module
from .errors import BuildError, HotplateError
from .record import History
from .rollout import GateSettings, ServerProcess
from .notify import Notifier, Target
from .state import State, write_atomic
from .verify import Policy
from .verify import save as save_policy


def _state_root(args, default: Path) -> Path:
    return Path(args.state or os.environ.get("HOTPLATE_STATE") or default)


def _state(args, default: Path) -> State:
    """The state directory, made if missing; for commands that run module
    code (those with ``--user``), with the workers' account (controller/account.py)."""
    if hasattr(args, "user"):
        keep_to_itself()
    user = worker_user(args.user) if hasattr(args, "user") else None
    return State(_state_root(args, default), user).make()


# -- build and serve (no git) -------------------------------------------------

def _build(args, state: State) -> Attempt:
    print(f"building {Path(args.app).resolve()} into {state.root}", flush=True)
    try:
        outcome = build_release(Path(args.app), state, on_module=lambda m: print("  " + format_module(m), flush=True))
    except BuildError as e:
        for result in e.results:
            _print_diagnostics(result.source, result)
        raise
    for result in outcome.build.modules:
        _print_diagnostics(f"warnings from {result.source}", result)
    how = "reused" if outcome.release.reused else "created"
    print(f"release {outcome.release.id} {how} ({outcome.build.compiled} compiled, "
          f"{len(outcome.build.modules) - outcome.build.compiled} cached, {outcome.build.seconds * 1000:.0f} ms)")
    return outcome


def _print_diagnostics(title: str, result) -> None:
    """A module's compiler output, verbatim and indented under a title."""
    if result.diagnostics.strip():
        print(f"  {title}:\n    " + result.diagnostics.rstrip().replace("\n", "\n    "))


def cmd_build(args) -> int:
    _build(args, _state(args, Path(args.app) / ".hotplate"))
    return 0


def cmd_serve(args) -> int:
    from hotplate.server.gunicorn_app import HotplateServer

    state = _state(args, Path(args.app) / ".hotplate")
    state.lock("serve")
    outcome = _build(args, state)
    state.switch(outcome.release.id, None)
    config = _server_config(args, state)
    print(f"serving release {outcome.release.id} on http://{config.bind}/", flush=True)
    HotplateServer(state.current, config, state.run, state.data).run()
    return 0


def _server_config(args, state: State) -> ServerConfig:
    return ServerConfig.from_env(bind=args.bind, workers=args.workers, threads=args.threads,
                                 max_requests=args.max_requests, user=state.worker_user,
                                 sanitize=str(state.workers) if getattr(args, "sanitize", False) else None,
                                 max_rss=args.max_rss_mib * 1024 ** 2 if args.max_rss_mib is not None else None)


# -- up and dev ----------------------------------------------------------------

def cmd_up(args) -> int:
    from werkzeug.serving import make_server

    from .api import create_api
    from .reconcile import Controller, Settings
    from .source import Source

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per API call
    secret = _secret(args.webhook_secret_file, "HOTPLATE_WEBHOOK_SECRET", "webhook secret")
    notifier_secret = _secret(args.notify_secret_file, "HOTPLATE_NOTIFY_SECRET", "notification secret")
    targets = [Target.parse(t) for t in args.notify]
    status_token = _secret(args.status_token_file, "HOTPLATE_STATUS_TOKEN", "commit status token")
    state = _state(args, Path(".hotplate"))
    state.lock("up")
    history = _history(state)
    state.token()
    source = Source(state, args.branch, args.source)
    if args.import_path and source.import_from(args.import_path):
        print(f"imported {args.branch} from {args.import_path} into {state.repo}")
    policy = Policy.parse(args.verify) if args.verify else None
    save_policy(policy, state.verify_file)
    settings = Settings(branch=args.branch, poll_interval=args.poll if args.source else 300.0,
                        keep_releases=args.keep, cache_bytes=args.cache_mib * 1024 ** 2,
                        gate=GateSettings(bake_seconds=args.bake), verify=policy)
    server = _start_server(state, args)
    api = None
    try:  # from here on, a failing start stops the server it started too
        notifier = Notifier(targets, notifier_secret, history, status_token)
        controller = Controller(state, source, server, settings, history, notifier)
        controller.recover()
        host, port = args.api.rsplit(":", 1)
        api = make_server(host, int(port), create_api(controller, secret), threaded=True)
        url = f"http://{host}:{api.server_port}"
        write_atomic(state.controller_info, json.dumps({"url": url, "branch": args.branch, "pid": os.getpid()}))
        threading.Thread(target=api.serve_forever, daemon=True).start()
        _banner(state, server, url, args, secret)
        _stop_on_signals(controller)
        threading.Thread(target=server.supervise, args=(controller.stopping,), daemon=True).start()
        controller.run()
    finally:
        if api is not None:
            api.shutdown()
        state.controller_info.unlink(missing_ok=True)
        if not args.keep_server:
            server.stop()
    return 0


def _secret(path: str | None, variable: str, what: str) -> str | None:
    """A secret, from a file only its owner can read, or the environment,
    whence it is removed: no child (server, compiler, git) inherits it."""
    if path is None:
        return os.environ.pop(variable, None) or None
    try:
        mode = os.stat(path).st_mode
        secret = Path(path).read_text().strip()
    except OSError as e:
        raise HotplateError(f"cannot read the {what} file: {e}") from None
    if mode & 0o077:
        raise HotplateError(f"{path} can be read by others (mode {mode & 0o777:o}); run `chmod 600 {path}`")
    if not secret:
        raise HotplateError(f"{path} is empty; put the {what} in it")
    return secret


def _history(state: State) -> History:
    """The deploy history; a damaged database is set aside and said so."""
    history = History.open(state.db, expected=any(p for p in state.releases.iterdir() if not p.name.startswith(".")))
    if history.damage:
        logging.getLogger("hotplate.controller").error("%s", history.damage)
    return history


def _start_server(state: State, args, console: bool = False, dev_errors: str | None = None) -> ServerProcess:
    """Adopt the app server a stopped controller left running, or start one
    on a socket this process holds (so restarts keep it); then supervise it."""
    server = ServerProcess(state, replace(_server_config(args, state), dev_errors=dev_errors), console)
    if server.pid is None:
        server.listen()
    server.start()
    return server


def _stop_on_signals(controller) -> None:
    def stop(signum, frame):
        controller.stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _banner(state: State, server: ServerProcess, api_url: str, args, secret: str | None) -> None:
    host_port = api_url.removeprefix("http://")
    lines = [f"hotplate up: app on http://{server.config.bind}/  controller API on {api_url}/api/status"]
    if args.source:
        lines.append(f"tracking {args.branch} of {args.source} (poll every {args.poll:g}s; `hotplate sync` to deploy now)")
    else:
        lines += [f"push to deploy ({args.branch}):",
                  f"  git remote add hotplate {state.repo}        # file path or ssh://host{state.repo}",
                  f"  git remote add hotplate http://hotplate:$(cat {state.root}/token)@{host_port}/git/repo.git",
                  f"  git push hotplate {args.branch}"]
    lines.append(f"webhooks: POST {api_url}/webhook" + ("" if secret else " (off: pass --webhook-secret-file)"))
    print("\n".join(lines), flush=True)


def cmd_dev(args) -> int:
    """Serve a working tree and redeploy it on every save, with no commit."""
    from .reconcile import Controller, Settings

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)  # gcc's lines as they are
    app = Path(args.app).resolve()
    state = _state(args, app / ".hotplate-dev")
    state.lock("dev")
    history = _history(state)
    errors = state.run / "dev-error.txt"
    errors.unlink(missing_ok=True)
    server = _start_server(state, args, console=True, dev_errors=str(errors))
    controller = Controller(state, None, server, Settings(gate=GateSettings(bake_seconds=0), sanitize=args.sanitize),
                            history)
    controller.recover()
    _stop_on_signals(controller)
    threading.Thread(target=server.supervise, args=(controller.stopping,), daemon=True).start()
    print(f"hotplate dev: serving {app} on http://{server.config.bind}/ ; save a file to redeploy", flush=True)
    try:
        devloop.run(controller, app, errors)
    finally:
        server.stop()
    return 0


# -- talking to a running controller --------------------------------------------

def _call(args, method: str, path: str, body: dict | None = None):
    state = State(_state_root(args, Path(".hotplate")))  # read-only: creates nothing
    info = state.read_json(state.controller_info)
    if not info:
        raise HotplateError(f"no controller is running for {state.root}; start one with `hotplate up`")
    req = urllib.request.Request(info["url"] + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {state.token()}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        try:
            detail = json.loads(detail)["error"]
        except (ValueError, KeyError):
            pass
        raise HotplateError(f"{method} {path}: {e.code}: {detail}") from None
    except OSError as e:
        raise HotplateError(f"cannot reach the controller at {info['url']}: {e}") from None


def _stream(args, path: str):
    """Lines of a streamed answer, as they come."""
    state = State(_state_root(args, Path(".hotplate")))
    info = state.read_json(state.controller_info)
    if not info:
        raise HotplateError(f"no controller is running for {state.root}; start one with `hotplate up`")
    req = urllib.request.Request(info["url"] + path, headers={"Authorization": f"Bearer {state.token()}"})
    try:
        with urllib.request.urlopen(req, timeout=3600) as r:
            for raw in r:
                yield raw.decode(errors="replace").rstrip("\n")
    except (OSError, urllib.error.HTTPError) as e:
        raise HotplateError(f"GET {path}: {e}") from None


def _emit(args, data, human) -> None:
    print(json.dumps(data, indent=2) if args.json else human(data))


def _say(args, data: dict, text: str) -> None:
    """One result: ``text`` for people, ``data`` with ``--json``."""
    print(json.dumps(data, indent=2) if args.json else text, flush=True)


def cmd_status(args) -> int:
    s = _call(args, "GET", "/api/status")
    _emit(args, s, _format_status)
    unwell = s["state"] in ("Failed", "OutOfSync") or s["health"]["state"] in ("Degraded", "Down")
    return 1 if args.exit_code and unwell else 0


WAIT_POLL_S = 0.2
APP_LOG_POLL_S = 0.2


def _wait(args, target: str | None, until: str, timeout: float) -> int:
    """Poll status until ``target`` (default: the head the controller last
    saw) is live, and healthy if asked: 0; 1 as soon as its deploy failed;
    2 at the timeout. For CI."""
    deadline = time.monotonic() + timeout
    while True:
        s = _call(args, "GET", "/api/status")
        target = target or s["head"]["commit"]
        deploying = s["progressing"] and s["progressing"]["commit"] == target
        facts = {"commit": target, "state": s["state"], "health": s["health"]["state"], "live": s["live"]}
        if s["live"]["commit"] == target and not deploying and (until == "live" or s["health"]["state"] == "Healthy"):
            _say(args, {"outcome": "live", **facts},
                 f"live: {target[:12]} (release {s['live']['release']}), health {s['health']['state']}")
            return 0
        if s["failure"] and s["head"]["commit"] == target and not deploying:
            _say(args, {"outcome": "failed", "failure": s["failure"], **facts},
                 f"FAILED: {target[:12]}: deploy {s['failure']['deploy']} {s['failure']['reason']}; "
                 f"see `hotplate logs {s['failure']['deploy']}`")
            return 1
        if time.monotonic() >= deadline:
            _say(args, {"outcome": "timed_out", **facts},
                 f"timed out after {timeout:g}s waiting for {(target or 'the head')[:12]} to be {until}: "
                 f"state {s['state']}, health {s['health']['state']}, live {(s['live']['commit'] or '-')[:12]}")
            return 2
        time.sleep(WAIT_POLL_S)


def cmd_wait(args) -> int:
    return _wait(args, args.commit, args.until, args.timeout)


def _mark(text: str, good: bool | None) -> str:
    """Green with a tick or red with a cross, on a terminal only (and not
    under NO_COLOR); plain text in pipes, files and CI logs."""
    if good is None or not sys.stdout.isatty() or "NO_COLOR" in os.environ:
        return text
    return f"\033[{32 if good else 31}m{'✓' if good else '✗'} {text}\033[0m"


def _format_status(s: dict) -> str:
    short = lambda sha: sha[:12] if sha else "-"
    health = _mark(s["health"]["state"], s["health"]["state"] == "Healthy") + \
        (f" ({'; '.join(s['health']['why'])})" if s["health"]["why"] else "")
    state = _mark(s["state"], True if s["state"] == "Synced" else False if s["state"] in ("Failed", "OutOfSync")
                  else None)
    out = [f"state:    {state}" + ("   <<< PINNED by rollback: auto-sync is off until `hotplate resume`"
                                         if s["pinned"] else ""),
           f"health:   {health}" + (f"; app server restarted {s['server']['restarts']} time(s)"
                                    if s["server"]["restarts"] else ""),
           f"live:     {s['live']['release'] or '-'} (commit {short(s['live']['commit'])})",
           f"head:     {s['head']['branch']} @ {short(s['head']['commit'])}" + (f" ({s['head']['note']})" if s['head']['note'] else "")]
    if s["failure"]:
        out.append(f"failed:   deploy {s['failure']['deploy']}: {s['failure']['reason']}; push a fix (`hotplate logs {s['failure']['deploy']}`)")
    if s["progressing"]:
        out.append(f"deploying: {short(s['progressing']['commit'])} (deploy {s['progressing']['deploy']})")
    if s["last_error"]:
        out.append(f"error:    {s['last_error']}")
    out += [f"NOTICE:   {n}" for n in s["notices"]]
    out.append("\nmodule        source                     object        routes  workers ok")
    out += [f"{m['name']:<13} {m['source']:<26} {m['object']:<13} {m['routes']:<7} {m['workers_ok']}" for m in s["modules"]]
    out.append("\nworker  release          requests  5xx  crashes  timeouts  websockets")
    out += [f"{w['pid']:<7} {w['release'] or '-':<16} {w['requests']:<9} {w['errors_5xx']:<4} {w['crashes']:<8} "
            f"{w['timeouts']:<9} {w['websockets']}" for w in s["workers"]]
    e = s["exited_workers"]
    out.append(f"{'exited':<7} {'-':<16} {e['requests']:<9} {e['errors_5xx']:<4} {e['crashes']:<8} {e['timeouts']:<9} -")
    return "\n".join(out)


def cmd_history(args) -> int:
    def human(rows):
        out = ["id   when                 trigger   commit        outcome      release        seconds  reason"]
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"]))
            secs = f"{(r['finished'] or time.time()) - r['started']:.2f}"
            out.append(f"{r['id']:<4} {when}  {r['trigger']:<9} {(r['commit_sha'] or '-')[:12]:<13} {r['outcome']:<12} "
                       f"{r['release'] or '-':<14} {secs:<8} {r['reason'] or ''}")
        return "\n".join(out)
    _emit(args, _call(args, "GET", f"/api/deploys?limit={args.limit}"), human)
    return 0


def cmd_logs(args) -> int:
    def human(r):
        stages = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in r["stages"].items())
        return (f"deploy {r['id']} ({r['trigger']}) {r['outcome']}: {r['commit_sha'] or ''} {r['message'] or ''}\n"
                f"stages: {stages}\n\n{r['log']}")
    if args.app:
        return _app_log(args)
    deploy = args.deploy
    if deploy is None:
        latest = _call(args, "GET", "/api/deploys?limit=1")
        if not latest:
            raise HotplateError("no deploy yet: push a commit (see `hotplate status`)")
        deploy = latest[0]["id"]
    if args.follow:
        for line in _stream(args, f"/api/deploys/{deploy}/follow"):
            print(line, flush=True)
        return 0
    _emit(args, _call(args, "GET", f"/api/deploys/{deploy}"), human)
    return 0


def _app_log(args) -> int:
    """The app server's log (run/server.log), filtered by module and route;
    with --follow, then what it appends, as it comes."""
    path = State(_state_root(args, Path(".hotplate"))).run / "server.log"
    tags = [t for t in (args.module and f"module={args.module}", args.route and f"route={args.route}") if t]
    try:
        log = path.open(errors="replace")
    except OSError as e:
        raise HotplateError(f"no app server log at {path} ({e.strerror}); is `hotplate up` running there?") from None
    with log:
        while True:
            line = log.readline()
            if not line:
                if not args.follow:
                    return 0
                time.sleep(APP_LOG_POLL_S)
                continue
            if all(t in line for t in tags):
                print(line.rstrip("\n"), flush=True)


def cmd_releases(args) -> int:
    def human(rows):
        out = ["release        commit        built                live    message"]
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["built_at"])) if r["built_at"] else "-"
            mark = "LIVE" + (" (pinned)" if r["pinned"] else "") if r["live"] else ""
            out.append(f"{r['release']:<14} {(r['commit'] or '-')[:12]:<13} {when:<20} {mark:<7} {r['message'] or ''}")
        return "\n".join(out)
    _emit(args, _call(args, "GET", "/api/releases"), human)
    return 0


def cmd_notifications(args) -> int:
    def human(rows):
        out = ["when                 deploy  event                attempts  target / error"]
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"]))
            out.append(f"{when}  {r['deploy']:<6}  {r['event']:<19}  {r['attempts']:<8}  {r['target']}"
                       + (f"  FAILED: {r['error']}" if r["error"] else ""))
        return "\n".join(out)
    _emit(args, _call(args, "GET", f"/api/notifications?limit={args.limit}"), human)
    return 0


def cmd_sync(args) -> int:
    r = _call(args, "POST", "/api/sync", {})
    if r.get("pinned"):
        _say(args, r, f"nothing happened: live is pinned to {r['pinned']} by a rollback; `hotplate resume` lifts the pin")
        return 1
    _say(args, r, "sync requested: the controller compares the branch tip with live now (`hotplate status`)")
    return _wait(args, r["head"], "live", args.timeout) if args.wait else 0


def cmd_retry(args) -> int:
    r = _call(args, "POST", "/api/retry", {})
    _say(args, r, f"retrying {r['commit'][:12]}: it deploys now even though it failed before (`hotplate logs`)")
    return 0


def cmd_diff(args) -> int:
    def human(d):
        if d.get("error"):
            return f"head {d.get('head')}: {d['error']}"
        out = [f"head {d['head'][:12]} against live {d['live']}:"]
        out += [f"  {m['change']:<9} {m['name']} ({m.get('source', '')})" for m in d["modules"]]
        out += [f"  + route {r}" for r in d["routes_added"]] + [f"  - route {r}" for r in d["routes_removed"]]
        return "\n".join(out)
    d = _call(args, "GET", "/api/diff")
    _emit(args, d, human)
    return 1 if args.exit_code and d.get("head") and d["head"] != _call(args, "GET", "/api/status")["live"]["commit"] \
        else 0


def cmd_rollback(args) -> int:
    busy = _call(args, "GET", "/api/status")["progressing"]
    if busy and not args.json:
        print(f"waiting for deploy {busy['deploy']} in progress to end first", flush=True)
    r = _call(args, "POST", "/api/rollback", {"to": args.to})
    _emit(args, r, lambda r: "\n".join(r["log"]))
    return 0 if r["outcome"] == "succeeded" else 1


def cmd_resume(args) -> int:
    r = _call(args, "POST", "/api/resume", {})
    if not r["resumed"]:
        _say(args, r, "nothing happened: live was not pinned; auto-sync is on")
        return 1
    _say(args, r, "resumed: auto-sync is on; the branch tip deploys if it is not live")
    return _wait(args, r["head"], "live", args.timeout) if args.wait else 0


def cmd_revert(args) -> int:
    r = _call(args, "POST", "/api/revert", {"commit": args.commit, "force": args.force})
    _say(args, r, f"committed revert {r['commit'][:12]} on the hosted branch; it deploys now (`hotplate status`).\n"
                  "Run `git pull` in your clone before your next push.")
    return _wait(args, r["commit"], "live", args.timeout) if args.wait else 0


def cmd_init(args) -> int:
    from .scaffold import scaffold

    path = scaffold(Path(args.dir), args.branch, args.force)
    _say(args, {"path": str(path)}, f"created an app in {path}: deploy.yaml, modules/hello.c, a git repository.\n"
                                    f"try it:  hotplate dev {path}")
    return 0


# -- parser ----------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hotplate", description="Serve C modules from git, rolled without downtime.")
    p.add_argument("--version", action="version",
                   version=f"hotplate {importlib.metadata.version('hotplate')}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, func, app: bool = False, json_out: bool = True, example: str = ""):
        sp = sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}" if example else None,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        if app:
            sp.add_argument("app", nargs="?", default=".", help="app directory holding deploy.yaml (default: .)")
        sp.add_argument("--state", help="state directory (default: .hotplate, or $HOTPLATE_STATE)")
        if json_out:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        sp.set_defaults(func=func)
        return sp

    def server_flags(sp):
        sp.add_argument("--bind", help="app address (default 127.0.0.1:8000)")
        sp.add_argument("--workers", type=int, help="worker processes (default 2)")
        sp.add_argument("--threads", type=int, help="threads per worker (default 8)")
        sp.add_argument("--max-requests", type=int, help="replace a worker after this many requests, plus up to "
                        "10%% jitter (default 100000; 0: never; deploy.yaml `limits:` overrides)")
        sp.add_argument("--max-rss-mib", type=int, help="replace a worker once its memory passes this many MiB "
                        "(default 1024; 0: never; deploy.yaml `limits:` overrides)")
        user_flag(sp)

    def user_flag(sp):
        sp.add_argument("--user", help="account that runs module code, made if missing (started as root only; "
                        "default: hotplate as root, else your own)")
        return sp

    user_flag(command("build", "validate deploy.yaml and build a release", cmd_build, app=True, json_out=False,
                      example="hotplate build myapp"))
    server_flags(command("serve", "build an app directory and serve it (no git)", cmd_serve, app=True,
                         json_out=False, example="hotplate serve myapp --bind 127.0.0.1:8080"))
    dev = command("dev", "serve a working tree and redeploy on every save", cmd_dev, app=True, json_out=False,
                  example="hotplate dev myapp --sanitize")
    dev.add_argument("--sanitize", action="store_true",
                     help="build modules with AddressSanitizer and UndefinedBehaviorSanitizer: a memory error in a "
                          "handler answers 500 with the report (file:line), also printed here")
    server_flags(dev)
    up = command("up", "run the controller and the server for a repository", cmd_up, json_out=False,
                 example="hotplate up                          # host a repository to push to\n"
                         "  hotplate up https://git.example/app.git --poll 30 --verify ssh:/etc/hotplate/signers\n"
                         "environment: HOTPLATE_STATE, HOTPLATE_WEBHOOK_SECRET, HOTPLATE_NOTIFY_SECRET, and the\n"
                         "server's HOTPLATE_* settings (README, Server)")
    up.add_argument("source", nargs="?", help="path or URL to mirror (default: host a repository to push to)")
    up.add_argument("--branch", default="main")
    up.add_argument("--api", default="127.0.0.1:8001", help="controller API address (default 127.0.0.1:8001)")
    up.add_argument("--poll", type=float, default=30.0, help="seconds between fetches of a mirrored source")
    up.add_argument("--bake", type=float, default=2.0, help="health gate bake window in seconds")
    up.add_argument("--keep", type=int, default=10, help="releases to keep on disk (default 10)")
    up.add_argument("--cache-mib", type=int, default=1024,
                    help="build cache size in MiB; least recently used objects go first, never those of kept "
                         "releases (default 1024)")
    up.add_argument("--webhook-secret-file", help="a file (mode 0600) holding the secret that enables POST /webhook; "
                    "or set $HOTPLATE_WEBHOOK_SECRET (never on the command line, where `ps` shows it)")
    up.add_argument("--verify", metavar="ssh:FILE|gpg:DIR",
                    help="deploy only commits signed by a trusted key: an SSH allowed-signers file, or a GnuPG "
                         "home holding the trusted public keys (kept outside the repository); pushes of unsigned "
                         "commits are refused")
    up.add_argument("--notify", action="append", default=[], metavar="URL",
                    help="POST each deploy's start and outcome here (repeatable): signed JSON "
                         "(X-Hotplate-Signature); slack:URL for a Slack-compatible hook; github:API/repos/O/R, "
                         "gitea:API/repos/O/R or gitlab:API/projects/ID for commit statuses")
    up.add_argument("--notify-secret-file", help="a file (mode 0600) holding the key that signs notifications; "
                    "or set $HOTPLATE_NOTIFY_SECRET")
    up.add_argument("--status-token-file", help="a file (mode 0600) holding the API token for github:, gitea: and "
                    "gitlab: commit statuses; or set $HOTPLATE_STATUS_TOKEN")
    up.add_argument("--import", dest="import_path", help="seed the hosted branch from a local repository if empty")
    up.add_argument("--keep-server", action="store_true", help="leave the app server running when the controller stops")
    server_flags(up)
    def wait_flags(sp, flag: bool = True):
        if flag:
            sp.add_argument("--wait", action="store_true", help="then wait until the commit is live (exit 0), its "
                            "deploy failed (1) or --timeout passed (2)")
        sp.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
        return sp

    status_cmd = command("status", "live release, head, sync state, modules, workers", cmd_status,
                         example="hotplate status --exit-code || alert")
    status_cmd.add_argument("--exit-code", action="store_true",
                            help="exit 1 when Failed or OutOfSync, or Degraded or Down (for CI and scripts)")
    wait = wait_flags(command("wait", "wait until the head (or --commit) is live, for CI: exit 0 live, 1 failed, "
                                      "2 timed out", cmd_wait,
                              example='hotplate wait --commit "$(git rev-parse HEAD)" --for healthy --timeout 300'),
                      flag=False)
    wait.add_argument("--for", dest="until", choices=("live", "healthy"), default="live",
                      help="live: serving the commit; healthy: and every worker healthy (default live)")
    wait.add_argument("--commit", help="the commit to wait for (default: the branch head)")
    command("history", "deploy attempts, newest first", cmd_history).add_argument(
        "--limit", type=int, default=20)
    logs = command("logs", "the full log of one deploy (default: the latest), or the app server's (--app)", cmd_logs,
                   example="hotplate logs -f            # the deploy in progress, as it runs\n"
                           "  hotplate logs --app -f --module notes")
    logs.add_argument("deploy", type=int, nargs="?")
    logs.add_argument("-f", "--follow", action="store_true", help="stream a deploy in progress, or the app log")
    logs.add_argument("--app", action="store_true", help="the app server's log (STATE/run/server.log): crashes, "
                      "timeouts, module hp_log lines, the access log when on")
    logs.add_argument("--module", help="with --app: only this module's lines")
    logs.add_argument("--route", help="with --app: only this route's lines (its pattern, e.g. /users/<int:id>)")
    wait_flags(command("sync", "reconcile now", cmd_sync))
    command("releases", "retained releases: commit, message, when built, which is live", cmd_releases,
            example="hotplate releases && hotplate rollback --to RELEASE")
    command("notifications", "the delivery log of --notify: event, target, attempts, failures",
            cmd_notifications).add_argument("--limit", type=int, default=20)
    command("diff", "what deploying the head would change", cmd_diff).add_argument(
        "--exit-code", action="store_true", help="exit 1 when the head is not live (something to deploy)")
    command("rollback", "re-point live to a retained release and pin it", cmd_rollback).add_argument(
        "--to", help="release id (default: the previous release)")
    wait_flags(command("resume", "lift a rollback's pin: auto-sync again", cmd_resume))
    revert = wait_flags(command("revert", "commit a revert on the hosted branch (git stays the truth)", cmd_revert))
    revert.add_argument("--commit", help="commit to revert (default: the branch tip)")
    revert.add_argument("--force", action="store_true", help="revert even when the commit is itself a revert")
    command("retry", "deploy the branch tip again after it failed (e.g. for a cause outside it)", cmd_retry)
    init = command("init", "scaffold a new app repository", cmd_init)
    init.add_argument("dir")
    init.add_argument("--branch", default="main", help="the branch to commit to, the one `hotplate up` tracks "
                      "(default main)")
    init.add_argument("--force", action="store_true", help="overwrite deploy.yaml, modules/hello.c and .gitignore")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    argcomplete.autocomplete(p)  # only when the shell asks (eval "$(register-python-argcomplete hotplate)")
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except HotplateError as e:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(e), "reason": e.reason}))
        else:
            print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:  # a bug: one line, the traceback on request
        if os.environ.get("HOTPLATE_DEBUG"):
            raise
        print(f"error: internal: {type(e).__name__}: {e} (HOTPLATE_DEBUG=1 shows the traceback; please report it)",
              file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
