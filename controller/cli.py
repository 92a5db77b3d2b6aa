"""The ``hotplate`` command.

``up``, ``dev``, ``serve``, ``build`` and ``init`` run things here; the
other commands talk to a running ``hotplate up`` through its API
(controller/client.py).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import replace
from pathlib import Path

import argcomplete

from hotplate.server.config import ServerConfig, server_environment
from hotplate.server.contract.layout import write_atomic

from . import client, heap
from .account import keep_to_itself, worker_user
from .deploy import Attempt, build_release, format_module
from .errors import BuildError, HotplateError
from .notify import Notifier, Target
from .record import History
from .recovery import recover
from .rollout import GateSettings, ServerProcess
from .state import State
from .tokens import ROLES, Tokens
from .verify import Policy
from .verify import save as save_policy


def _state(args, default: Path) -> State:
    """The state directory, made if missing; for commands that run module
    code (those with ``--user``), with the workers' account (controller/account.py)."""
    if hasattr(args, "user"):
        keep_to_itself()
    root = client.state_root(args, default)
    user = worker_user(args.user, root, args.share_user) if hasattr(args, "user") else None
    return State(root, user).make()


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


def cmd_fleet(args) -> int:
    from .localfleet import up

    return up(Path(args.state or ".hotplate-fleet"), os.path.abspath(args.source), args.hosts, args.port,
              args.base_port)


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
    kept = server_environment(tuple(args.pass_env))
    os.environ.clear()  # gunicorn runs in this process: what module code inherits is what stays here
    os.environ.update(kept)
    print(f"serving release {outcome.release.id} on http://{config.bind}/", flush=True)
    HotplateServer(state, config).run()
    return 0


def _server_config(args, state: State) -> ServerConfig:
    return ServerConfig.from_env(bind=args.bind, workers=args.workers, threads=args.threads,
                                 max_requests=args.max_requests, user=state.worker_user, store=args.store,
                                 jobs=args.jobs, nats=args.nats,
                                 sanitize=str(state.sanitizer) if getattr(args, "sanitize", False) else None,
                                 max_rss=args.max_rss_mib * 1024 ** 2 if args.max_rss_mib is not None else None)


# -- up and dev ----------------------------------------------------------------

def cmd_up(args) -> int:
    from werkzeug.serving import make_server

    from . import refwatch
    from .api import RequestHandler, create_api
    from .reconcile import Controller, Settings
    from .fleet import Fleet, FleetSource
    from .registry import RegistrySource
    from .status import report
    from .waves import Waves, WaveSettings
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
    if args.follow:
        source = RegistrySource(args.follow)
    else:
        source = Source(state, args.branch, args.source)
        if args.import_path and source.import_from(args.import_path):
            print(f"imported {args.branch} from {args.import_path} into {state.repo}")
    policy = Policy.parse(args.verify) if args.verify else None
    save_policy(policy, state.verify_file)
    settings = Settings(branch=args.branch, poll_interval=args.poll if args.source or args.follow else 300.0,
                        publish=args.publish,
                        keep_releases=args.keep, cache_bytes=args.cache_mib * 1024 ** 2,
                        gate=GateSettings(bake_seconds=args.bake), verify=policy)
    if args.fleet and not (args.publish and args.source or args.follow):
        raise HotplateError("--fleet needs a SOURCE to build from and --publish REGISTRY/REPO to publish to "
                            "(a candidate to lead), or --follow REGISTRY/REPO (a host that only follows)")
    server = _start_server(state, args)
    api = controller = None
    try:  # from here on, a failing start stops the server it started too
        notifier = Notifier(targets, notifier_secret, history, status_token)
        controller = Controller(state, source, server, settings, history, notifier)
        if args.fleet:
            registry = args.follow or args.publish
            fleet = Fleet(args.fleet, registry.rstrip("/").rpartition("/")[2],
                          args.host_name or f"{socket.gethostname()}:{server.config.bind.rpartition(':')[2]}",
                          candidate=not args.follow, report=lambda: report(controller),
                          on_change=lambda leading: controller.wake("fleet"),
                          on_rollout=lambda: None if controller.leads() else controller.wake("fleet"))
            waves = WaveSettings(args.wave_size, args.wave_bake, args.wave_timeout)
            controller.join_fleet(fleet, Waves(fleet, args.publish, waves) if args.publish else None,
                                  FleetSource(registry, fleet))
        recover(controller)
        host, port = args.api.rsplit(":", 1)
        api = make_server(host, int(port), create_api(controller, secret), threaded=True,
                          request_handler=RequestHandler)
        url = f"http://{host}:{api.server_port}"
        write_atomic(state.controller_info, json.dumps({"url": url, "branch": args.branch, "pid": os.getpid()}))
        threading.Thread(target=api.serve_forever, daemon=True).start()
        _banner(state, server, url, args, secret)
        _stop_on_signals(controller)
        threading.Thread(target=server.supervise, args=(controller.stopping,), daemon=True).start()
        if not (args.source or args.follow):  # hosted: a push moves the branch here
            refwatch.watch(state.repo, source.ref, lambda: controller.wake("push"), controller.push_arriving,
                           controller.stopping)
        controller.run()
    finally:
        if api is not None:
            api.shutdown()
        state.controller_info.unlink(missing_ok=True)
        if not args.keep_server:
            server.stop()
        if controller is not None and controller.fleet is not None:
            controller.fleet.stop()
    return 0


def _secret(path: str | None, variable: str, what: str) -> str | None:
    """A secret, from a file only its owner can read, or the environment,
    whence it is removed: no child (server, compiler, git) inherits it."""
    if path is None:
        return os.environ.pop(variable, None) or None
    try:
        mode = os.stat(path).st_mode
        secret = Path(path).read_text().removesuffix("\n").removesuffix("\r")  # (the newline an editor ends with)
    except OSError as e:
        raise HotplateError(f"cannot read the {what} file: {e}") from None
    if mode & 0o077:
        raise HotplateError(f"{path} can be read by others (mode {mode & 0o777:o}); run `chmod 600 {path}`")
    if not secret.strip():
        raise HotplateError(f"{path} is empty; put the {what} in it")
    if secret != secret.strip() or "\n" in secret:
        raise HotplateError(f"{path}: the {what} begins or ends with whitespace, or spans lines; hotplate takes the "
                            "file as it is (but for one final newline), so the other side would have to use the same "
                            "bytes: remove the whitespace")
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
    server = ServerProcess(state, replace(_server_config(args, state), dev_errors=dev_errors), console,
                           tuple(args.pass_env))
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
    errors = state.dev_errors
    errors.unlink(missing_ok=True)
    server = _start_server(state, args, console=True, dev_errors=str(errors))
    controller = Controller(state, None, server, Settings(gate=GateSettings(bake_seconds=0), sanitize=args.sanitize),
                            history)
    recover(controller)
    _stop_on_signals(controller)
    threading.Thread(target=server.supervise, args=(controller.stopping,), daemon=True).start()
    print(f"hotplate dev: serving {app} on http://{server.config.bind}/ ; save a file to redeploy", flush=True)
    try:
        from . import devloop  # (watchfiles: dev's alone)

        devloop.run(controller, app, errors)
    finally:
        server.stop()
    return 0


def cmd_init(args) -> int:
    from .scaffold import scaffold

    path = scaffold(Path(args.dir), args.branch, args.force)
    client.say(args, {"path": str(path)}, f"created an app in {path}: deploy.yaml, modules/hello.c, a git repository.\n"
                                    f"try it:  hotplate dev {path}")
    return 0


def cmd_token(args) -> int:
    """Named tokens, kept in the state directory: no controller need run."""
    root = client.state_root(args, Path(".hotplate"))
    if not root.is_dir():
        raise HotplateError(f"no state directory at {root}: pass the app's --state (or $HOTPLATE_STATE)")
    tokens = Tokens(State(root))
    if args.action == "create":
        secret = tokens.create(args.name, args.role)
        print(json.dumps({"name": args.name, "role": args.role, "token": secret}) if args.json else
              f"token {args.name} ({args.role}), shown this once, kept only as its digest:\n{secret}")
    elif args.action == "revoke":
        tokens.revoke(args.name)
        print(json.dumps({"revoked": args.name}) if args.json else
              f"revoked {args.name}: it and the dashboard sessions signed in with it are refused from now on")
    else:
        rows = tokens.listing()
        print(json.dumps(rows, indent=2) if args.json else "\n".join(
            [f"{'name':<24} {'role':<9} created"] +
            [f"{r['name']:<24} {r['role']:<9} {client.when(r['created']) if r['created'] else r['note']}"
             for r in rows]))
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
                        "10%% jitter (default 1000000; 0: never; deploy.yaml `limits:` overrides)")
        sp.add_argument("--max-rss-mib", type=int, help="replace a worker once its memory passes this many MiB "
                        "(default 1024; 0: never; deploy.yaml `limits:` overrides)")
        sp.add_argument("--store", help="the modules' shared key-value store (hp_kv_*): lmdb:PATH[?map_mib=N&sync=1] "
                        "or redis://HOST:PORT/DB (default: LMDB in STATE/data/store)")
        sp.add_argument("--jobs", type=int, help="background jobs (hp_job_start) run at once (default 2; 0: none)")
        sp.add_argument("--nats", help="NATS server that carries WebSocket publications to the other hosts of a "
                        "fleet (nats://HOST:PORT; default: this host only)")
        sp.add_argument("--pass-env", action="append", default=[], metavar="NAME",
                        help="also give the app server (and so module code) this variable of your environment "
                             "(repeatable; by default it gets only PATH, HOME, the locale, TZ and HOTPLATE_*)")
        user_flag(sp)

    def user_flag(sp):
        sp.add_argument("--user", help="account that runs module code, made if missing (started as root only; "
                        "default: an account of this state directory's own, hp-NAME-HASH)")
        sp.add_argument("--share-user", action="store_true",
                        help="let --user be an account another state directory already uses (its module code then "
                             "reaches this app's data, secrets and processes)")
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
                         "server's HOTPLATE_* settings (docs/reference/settings.md)")
    up.add_argument("source", nargs="?", help="path or URL to mirror (default: host a repository to push to)")
    up.add_argument("--branch", default="main")
    up.add_argument("--api", default="127.0.0.1:8001", help="controller API address (default 127.0.0.1:8001)")
    up.add_argument("--poll", type=float, default=30.0, help="seconds between fetches of a mirrored source "
                    "(or of the registry, with --follow)")
    up.add_argument("--publish", metavar="REGISTRY/REPO", help="tag each release that goes live `live` in an OCI "
                    "registry (http://HOST:PORT/NAME), for hosts that --follow it; NAME:ENV tags it ENV instead, "
                    "an environment that `hotplate promote` promotes from")
    up.add_argument("--fleet", metavar="etcd://HOST:PORT", help="one of a fleet's hosts: with SOURCE and --publish a "
                    "candidate (the one holding the lease in etcd builds, publishes and rolls out in waves), with "
                    "--follow a host that serves what the rollout names for it")
    up.add_argument("--host-name", help="this host's name in the fleet (default: HOSTNAME:PORT of --bind)")
    up.add_argument("--wave-size", type=int, default=1, help="hosts per wave after the leader (the canary; default 1)")
    up.add_argument("--wave-bake", type=float, default=0.0, help="seconds each wave serves healthy before the next "
                    "starts (default 0: the hosts' own --bake)")
    up.add_argument("--wave-timeout", type=float, default=120.0, help="seconds a wave's hosts have to serve the "
                    "release healthy before the fleet rolls back (default 120)")
    up.add_argument("--follow", metavar="REGISTRY/REPO", help="deploy what a leader publishes there instead of "
                    "building: pull, smoke-check, roll (no git on this host); NAME:ENV follows the tag ENV, an environment "
                    "that `hotplate promote` promotes to")
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
                            "deploy failed (1), --timeout passed (2), a rollback's pin keeps it back (3) or the "
                            "controller cannot be reached (4)")
        sp.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
        return sp

    status_cmd = command("status", "live release, head, sync state, modules, workers", client.cmd_status,
                         example="hotplate status --exit-code || alert")
    status_cmd.add_argument("--exit-code", action="store_true",
                            help="exit 1 when Failed or OutOfSync, or Degraded or Down (for CI and scripts)")
    wait = wait_flags(command("wait", "wait until the head (or --commit) is live, for CI: exit 0 live, 1 failed, "
                                      "2 timed out, 3 pinned by a rollback, 4 controller unreachable", client.cmd_wait,
                              example='hotplate wait --commit "$(git rev-parse HEAD)" --for healthy --timeout 300'),
                      flag=False)
    wait.add_argument("--for", dest="until", choices=("live", "healthy"), default="live",
                      help="live: serving the commit; healthy: and every worker healthy (default live)")
    wait.add_argument("--commit", help="the commit to wait for (default: the branch head)")
    command("history", "deploy attempts, newest first", client.cmd_history, example="hotplate history --limit 5 --json").add_argument(
        "--limit", type=int, default=20)
    logs = command("logs", "the full log of one deploy (default: the latest), or the app server's (--app)", client.cmd_logs,
                   example="hotplate logs -f            # the deploy in progress, as it runs\n"
                           "  hotplate logs --app -f --module notes")
    logs.add_argument("deploy", type=int, nargs="?")
    logs.add_argument("-f", "--follow", action="store_true", help="stream a deploy in progress, or the app log")
    logs.add_argument("--app", action="store_true", help="the app server's log (STATE/run/server.log): crashes, "
                      "timeouts, module hp_log lines, the access log when on")
    logs.add_argument("--module", help="with --app: only this module's lines")
    logs.add_argument("--route", help="with --app: only this route's lines (its pattern, e.g. /users/<int:id>)")
    wait_flags(command("sync", "reconcile now", client.cmd_sync, example="hotplate sync --wait"))
    command("releases", "retained releases: commit, message, when built, which is live", client.cmd_releases,
            example="hotplate releases && hotplate rollback --to RELEASE")
    command("notifications", "the delivery log of --notify: event, target, attempts, failures",
            client.cmd_notifications, example="hotplate notifications --limit 50").add_argument("--limit", type=int, default=20)
    command("diff", "what deploying the head would change", client.cmd_diff,
            example="hotplate diff --exit-code || echo 'something to deploy'").add_argument(
        "--exit-code", action="store_true", help="exit 1 when the head is not live (something to deploy)")
    wait_flags(command("rollback", "re-point live to a retained release and pin it (it waits for its own gate; "
                                   "--wait then for health)", client.cmd_rollback,
                       example="hotplate rollback --to r1a2b3c4d5e6 --wait")).add_argument(
        "--to", help="release id (default: the previous release)")
    wait_flags(command("restart", "roll fresh workers onto the live release, through its gate (after fixing what "
                                  "made them Degraded)", client.cmd_restart, example="hotplate restart --wait"))
    wait_flags(command("resume", "lift a rollback's pin: auto-sync again", client.cmd_resume,
                       example="hotplate resume --wait --timeout 120"))
    revert = wait_flags(command("revert", "commit a revert on the hosted branch (git stays the truth)",
                                client.cmd_revert, example="hotplate revert --commit 1a2b3c4 --wait && git pull"))
    revert.add_argument("--commit", help="commit to revert (default: the branch tip)")
    revert.add_argument("--force", action="store_true", help="revert even when the commit is itself a revert")
    promote = command("promote", "move another environment's registry tag to a release this one verified (the "
                      "same bits; it runs its own smoke check and gate)", client.cmd_promote,
                      example="hotplate promote --from staging --to production")
    promote.add_argument("release", nargs="?", help="release id (default: the one verified here last)")
    promote.add_argument("--from", dest="source", required=True, help="this environment: the tag it publishes "
                         "(hotplate up --publish REGISTRY/REPO:staging)")
    promote.add_argument("--to", dest="target", required=True, help="the environment to promote to: the tag it "
                         "follows (hotplate up --follow REGISTRY/REPO:production)")
    command("retry", "deploy the branch tip again after it failed (e.g. for a cause outside it)", client.cmd_retry,
            example="hotplate retry && hotplate wait")
    token = command("token", "named API tokens with a role (viewer, deployer, admin), for people and CI", cmd_token,
                    example="hotplate token create alice --role deployer")
    token.add_argument("action", choices=("create", "list", "revoke"), nargs="?", default="list")
    token.add_argument("name", nargs="?", help="the token's name (create, revoke): who uses it")
    token.add_argument("--role", choices=ROLES, default="viewer", help="what it may do (default: viewer)")
    command("audit", "the API calls made, newest first: who, what, and how they were answered", client.cmd_audit,
            example="hotplate audit --limit 50").add_argument("--limit", type=int, default=30)
    config = command("config", "the app's config and secrets, read by modules with hp_config()", client.cmd_config,
                     json_out=False, example="hotplate config set --secret DB_PASSWORD=s3cret --wait && hotplate config")
    actions = config.add_subparsers(dest="action")
    config.set_defaults(action="list", json=False)
    for action, help, items in (
            ("list", "every key, secrets' values hidden, and which set is live", None),
            ("set", "set KEY=VALUE... (kept encrypted outside git), then roll the workers onto them", "KEY=VALUE"),
            ("unset", "remove keys, then roll the workers", "KEY"),
            ("recipient", "the public key committed values in config.yaml are encrypted to", None),
            ("encrypt", "encrypt a value (argument or stdin) for config.yaml", "VALUE")):
        sp = actions.add_parser(action, help=help, description=help)
        sp.add_argument("--state", help="state directory (default: .hotplate, or $HOTPLATE_STATE)")
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        if items:
            sp.add_argument("items", nargs="+" if action != "encrypt" else "?", metavar=items,
                            default=[] if action == "encrypt" else None)
        if action in ("set", "unset"):
            wait_flags(sp)
        if action == "set":
            sp.add_argument("--secret", action="store_true", help="hide the values in `hotplate config list`")
    fleet = command("fleet", "start a whole fleet on this machine, for trying it: etcd, a registry, NATS, N hosts "
                    "and nginx in front, on loopback", cmd_fleet, json_out=False,
                    example="hotplate fleet up . --hosts 3 --port 8080")
    fleet.add_argument("action", choices=["up"])
    fleet.add_argument("source", nargs="?", default=".", help="the app's repository the fleet builds (default: .)")
    fleet.add_argument("--hosts", type=int, default=3, help="hosts: two candidates to lead, the rest followers")
    fleet.add_argument("--port", type=int, default=8080, help="the load balancer's port on 127.0.0.1")
    fleet.add_argument("--base-port", type=int, metavar="N",
                       help="put every other service on ports from N up: etcd N (its peers N+1), the registry N+2, "
                            "NATS N+3, then each host's app and controller API in turn (host1: N+4, N+5; ...); "
                            "default: free ports, printed at start")
    init = command("init", "scaffold a new app repository", cmd_init, example="hotplate init myapp && hotplate dev myapp")
    init.add_argument("dir")
    init.add_argument("--branch", default="main", help="the branch to commit to, the one `hotplate up` tracks "
                      "(default main)")
    init.add_argument("--force", action="store_true", help="overwrite deploy.yaml, modules/hello.c and .gitignore")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    argcomplete.autocomplete(p)  # only when the shell asks (eval "$(register-python-argcomplete hotplate)")
    args = p.parse_args(argv)
    heap.one_arena()  # (before the API's threads)
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
