"""The commands that talk to a running controller over its API (``hotplate
status``, ``wait``, ``logs``, ``rollback``...): a request, then a table for
people or JSON with ``--json``. The parser is in controller/cli.py.
"""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .errors import HotplateError
from .state import State


def state_root(args, default: Path) -> Path:
    return Path(args.state or os.environ.get("HOTPLATE_STATE") or default)


def _controller(args) -> tuple[str, str]:
    """The running controller's URL and the token to call it with: the
    caller's own ($HOTPLATE_TOKEN, from `hotplate token create`) or
    STATE/token; read-only: creates nothing."""
    state = State(state_root(args, Path(".hotplate")))
    info = state.read_json(state.controller_info)
    if not info:
        raise HotplateError(f"no controller is running for {state.root}; start one with `hotplate up`")
    return info["url"], os.environ.get("HOTPLATE_TOKEN") or state.token()


def _call(args, method: str, path: str, body: dict | None = None):
    url, token = _controller(args)
    req = urllib.request.Request(url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
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
        raise Unreachable(f"cannot reach the controller at {url}: {e}") from None


class Unreachable(HotplateError):
    """The controller did not answer (stopped, restarting, another host)."""


def _stream(args, path: str):
    """Lines of a streamed answer, as they come."""
    url, token = _controller(args)
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=3600) as r:
            for raw in r:
                yield raw.decode(errors="replace").rstrip("\n")
    except (OSError, urllib.error.HTTPError) as e:
        raise HotplateError(f"GET {path}: {e}") from None


def _emit(args, data, human) -> None:
    print(json.dumps(data, indent=2) if args.json else human(data))


def say(args, data: dict, text: str) -> None:
    """One result: ``text`` for people, ``data`` with ``--json``."""
    print(json.dumps(data, indent=2) if args.json else text, flush=True)


def cmd_status(args) -> int:
    s = _call(args, "GET", "/api/status")
    _emit(args, s, _format_status)
    unwell = s["state"] in ("Failed", "OutOfSync") or s["health"]["state"] in ("Degraded", "Down") or \
        any(h["state"] in UNWELL_HOSTS for h in (s.get("fleet") or {}).get("hosts", [])) or \
        bool(s.get("fleet") and not s["fleet"]["connected"])
    return 1 if args.exit_code and unwell else 0


WAIT_POLL_S = 0.2
APP_LOG_POLL_S = 0.2


#: ``hotplate wait``'s exit codes (and every ``--wait``'s).
WAIT_LIVE, WAIT_FAILED, WAIT_TIMED_OUT, WAIT_PINNED, WAIT_UNREACHABLE = 0, 1, 2, 3, 4
#: Seconds the controller may be unreachable (a restart) before a wait gives up.
UNREACHABLE_S = 10.0


def _wait(args, target: str | None, until: str, timeout: float) -> int:
    """Poll status until ``target`` (default: the head the controller last
    saw) is live, and healthy if asked: 0. The head is live only with the
    config set it is to run with (a config rollback keeps the commit but
    not the set). 1 as soon as its deploy failed; 2 at the timeout; 3 at
    once when a rollback's pin keeps it from deploying; 4 when the
    controller stays unreachable. For CI."""
    deadline = time.monotonic() + timeout
    lost: float | None = None
    while True:
        try:
            s = _call(args, "GET", "/api/status")
            lost = None
        except Unreachable as e:
            lost = lost or time.monotonic()
            if time.monotonic() - lost >= UNREACHABLE_S or time.monotonic() >= deadline:
                say(args, {"outcome": "unreachable", "commit": target, "error": str(e)},
                    f"gave up waiting: {e} (for {UNREACHABLE_S:g}s); is `hotplate up` running?")
                return WAIT_UNREACHABLE
            time.sleep(WAIT_POLL_S)
            continue
        target = target or s["head"]["commit"]
        deploying = s["progressing"] and s["progressing"]["commit"] == target
        facts = {"commit": target, "state": s["state"], "health": s["health"]["state"], "live": s["live"]}
        configured = s["pinned"] or target != s["head"]["commit"] or s["config"]["live"] == s["config"]["desired"]
        if s["live"]["commit"] == target and configured and not deploying and \
                (until == "live" or s["health"]["state"] == "Healthy"):
            say(args, {"outcome": "live", **facts},
                f"live: {target[:12]} (release {s['live']['release']}), health {s['health']['state']}")
            return WAIT_LIVE
        if s["failure"] and s["head"]["commit"] == target and not deploying:
            say(args, {"outcome": s["failure"].get("outcome", "failed"), "failure": s["failure"], **facts},
                f"FAILED: {target[:12]}: {_failure(s['failure'])}")
            return WAIT_FAILED
        if s["pinned"] and not deploying:
            say(args, {"outcome": "pinned", "pinned": s["pinned"], **facts},
                f"not deploying: live is pinned to {s['pinned']} by a rollback, so {target[:12]} does not deploy "
                "until `hotplate resume`")
            return WAIT_PINNED
        if time.monotonic() >= deadline:
            say(args, {"outcome": "timed_out", **facts},
                f"timed out after {timeout:g}s waiting for {(target or 'the head')[:12]} to be {until}: "
                f"state {s['state']}, health {s['health']['state']}, live {(s['live']['commit'] or '-')[:12]}")
            return WAIT_TIMED_OUT
        time.sleep(WAIT_POLL_S)


def cmd_wait(args) -> int:
    return _wait(args, args.commit, args.until, args.timeout)


def _failure(f: dict) -> str:
    """A failure as status and wait say it: the deploy to read, or (the
    config set's, or one retried too often) what was found."""
    if f["deploy"] is None:
        return f"{f['reason']}: {f['detail']}"
    return f"deploy {f['deploy']} {f['reason']}; push a fix, or `hotplate retry` (`hotplate logs {f['deploy']}`)"


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
        out.append(f"failed:   {_failure(s['failure'])}")
    elif s["state"] != "Synced" and s.get("ready", {}).get("message"):
        out.append(f"why:      {s['ready']['message']}")
    if s["progressing"]:
        out.append(f"deploying: {short(s['progressing']['commit'])} (deploy {s['progressing']['deploy']})")
    if s["last_error"]:
        out.append(f"error:    {s['last_error']}")
    out += [f"NOTICE:   {n}" for n in s["notices"]]
    out += _format_fleet(s.get("fleet"))
    out.append("\nmodule        source                     object        routes  workers ok")
    out += [f"{m['name']:<13} {m['source']:<26} {m['object']:<13} {m['routes']:<7} {m['workers_ok']}" for m in s["modules"]]
    out.append("\nworker  release          requests  5xx  crashes  timeouts  websockets")
    out += [f"{w['pid']:<7} {w['release'] or '-':<16} {w['requests']:<9} {w['errors_5xx']:<4} {w['crashes']:<8} "
            f"{w['timeouts']:<9} {w['websockets']}" for w in s["workers"]]
    e = s["exited_workers"]
    out.append(f"{'exited':<7} {'-':<16} {e['requests']:<9} {e['errors_5xx']:<4} {e['crashes']:<8} {e['timeouts']:<9} -")
    return "\n".join(out)


def _format_fleet(f: dict | None) -> list[str]:
    """The fleet's lines of ``hotplate status``: this host, the rollout, each host."""
    if f is None:
        return []
    out = [f"fleet:    {f['host']} on {f['etcd']}" +
           ("" if f["connected"] else f"   <<< CUT OFF from etcd: serving what it served; {f.get('error', '')}")]
    r = f["rollout"]
    if r:
        waves = " | ".join(", ".join(w) for w in r["waves"])
        out.append(f"rollout:  {r['state']} {r['release']} (from {r['previous'] or '-'}), wave {r['wave']} of "
                   f"{len(r['waves']) - 1} [{waves}], leader {r['leader']}" + (f": {r['reason']}" if r["reason"] else ""))
    out.append("\nhost                  role      release         desired         health    state")
    out += [f"{h['host']:<21} {h['role'] or '-':<9} {h['release'] or '-':<15} {h['desired'] or '-':<15} "
            f"{h['health'] or '-':<9} {_mark(h['state'], h['state'] == 'Synced')}{_host_note(h)}" for h in f["hosts"]]
    return out


def _host_note(h: dict) -> str:
    if h["state"] == "Missing" and h.get("since"):
        return f" since {time.strftime('%H:%M:%S', time.localtime(h['since']))} (no report: down or cut off)"
    if h["state"] in ("Failed", "Stale") and h.get("failed"):
        return f" ({h['failed'].get('reason')})"
    if h["state"] == "Unreadable" and h.get("error"):
        return f" (its key holds no report: {h['error']})"
    return ""


#: Host states that make ``status --exit-code`` fail: the fleet is not all on what it should serve.
UNWELL_HOSTS = ("Missing", "Stale", "Failed", "Unreadable")


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def cmd_history(args) -> int:
    def human(rows):
        out = ["id   when                 trigger   by           commit        outcome      release        seconds  "
               "reason"]
        for r in rows:
            secs = f"{(r['finished'] or time.time()) - r['started']:.2f}"
            out.append(f"{r['id']:<4} {when(r['started'])}  {r['trigger']:<9} {(r['actor'] or '-')[:12]:<12} "
                       f"{(r['commit_sha'] or '-')[:12]:<13} {r['outcome']:<12} {r['release'] or '-':<14} {secs:<8} "
                       f"{r['reason'] or ''}")
        return "\n".join(out)
    _emit(args, _call(args, "GET", f"/api/deploys?limit={args.limit}"), human)
    return 0


def cmd_audit(args) -> int:
    def human(rows):
        return "\n".join([f"{'when':<19}  {'who':<16} {'role':<9} status  call"] +
                         [f"{when(r['at'])}  {r['actor'] or '(no token)':<16} {r['role'] or '-':<9} {r['status']:<7} "
                          f"{r['method']} {r['path']}" for r in rows])
    _emit(args, _call(args, "GET", f"/api/audit?limit={args.limit}"), human)
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
    path = State(state_root(args, Path(".hotplate"))).server_log
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
            built = when(r["built_at"]) if r["built_at"] else "-"
            mark = "LIVE" + (" (pinned)" if r["pinned"] else "") if r["live"] else ""
            note = "  [never passed its health gate]" if r.get("passed") is False else ""
            out.append(f"{r['release']:<14} {(r['commit'] or '-')[:12]:<13} {built:<20} {mark:<7} {r['message'] or ''}"
                       + note)
        return "\n".join(out)
    _emit(args, _call(args, "GET", "/api/releases"), human)
    return 0


def _pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise HotplateError(f"{item!r}: write KEY=VALUE (and `hotplate config unset KEY` to remove one)")
        pairs[key] = value
    return pairs


def _latest_deploy(args) -> int:
    return next((d["id"] for d in _call(args, "GET", "/api/deploys?limit=1")), 0)


def _wait_config(args, digest: str | None, after: int, timeout: float) -> int:
    """Poll until the live release runs with config set ``digest`` and its
    deploy is over: 0; 1 as soon as a config deploy begun after deploy
    ``after`` failed; 2 at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        s = _call(args, "GET", "/api/status")
        c = s["config"]
        if c["live"] == digest and not s["progressing"]:
            say(args, {"outcome": "live", "config": digest}, f"live with config set {digest}")
            return 0
        failed = [d for d in _call(args, "GET", "/api/deploys?limit=5") if d["id"] > after
                  and d["trigger"] == "config" and d["outcome"] not in ("succeeded", "progressing")]
        if failed:
            d = failed[0]
            say(args, {"outcome": "failed", "deploy": d["id"], "reason": d["reason"]},
                f"FAILED: deploy {d['id']} {d['outcome']} ({d['reason']}); see `hotplate logs {d['id']}`")
            return 1
        if time.monotonic() >= deadline:
            say(args, {"outcome": "timed_out", "config": digest, "live": c["live"]},
                f"timed out after {timeout:g}s: live runs config set {c['live']}, not {digest} (`hotplate status`)")
            return 2
        time.sleep(WAIT_POLL_S)


def cmd_config(args) -> int:
    if args.action in ("set", "unset"):
        body = {"set": _pairs(args.items), "secret": args.secret} if args.action == "set" else {"unset": args.items}
        after = _latest_deploy(args)
        r = _call(args, "POST", "/api/config", body)
        text = (f"config stored; live is pinned to {r['pinned']}: it applies after `hotplate resume`" if r["pinned"]
                else f"config stored; deploying {r['commit'][:12]} with config set {r['config']}" if r["deploying"]
                else "config stored; live has these values already")
        say(args, r, text)
        return _wait_config(args, r["config"], after, args.timeout) if args.wait and r["deploying"] else 0
    if args.action == "encrypt":
        value = args.items if args.items else sys.stdin.read()
        say(args, r := _call(args, "POST", "/api/config/encrypt", {"value": value}), r["armored"].rstrip())
        return 0
    c = _call(args, "GET", "/api/config")
    if args.action == "recipient":
        say(args, {"recipient": c["recipient"]}, c["recipient"])
        return 0

    def human(c):
        out = [f"{k['key']}={'(secret)' if k['secret'] else k['value']}   [{k['source']}]" for k in c["keys"]]
        pending = c["live"] != c["desired"]
        out.append(f"live config set: {c['live'] or '(none)'}" + (f"; deploying {c['desired']}" if pending else ""))
        return "\n".join(out)
    _emit(args, c, human)
    return 0


def cmd_notifications(args) -> int:
    def human(rows):
        out = ["when                 deploy  event                attempts  target / error"]
        for r in rows:
            out.append(f"{when(r['at'])}  {r['deploy']:<6}  {r['event']:<19}  {r['attempts']:<8}  {r['target']}"
                       + (f"  FAILED: {r['error']}" if r["error"] else ""))
        return "\n".join(out)
    _emit(args, _call(args, "GET", f"/api/notifications?limit={args.limit}"), human)
    return 0


def cmd_sync(args) -> int:
    r = _call(args, "POST", "/api/sync", {})
    if r.get("pinned"):
        say(args, r, f"nothing happened: live is pinned to {r['pinned']} by a rollback; `hotplate resume` lifts the pin")
        return 1
    say(args, r, "sync requested: the controller compares the branch tip with live now (`hotplate status`)")
    return _wait(args, r["head"], "live", args.timeout) if args.wait else 0


def cmd_promote(args) -> int:
    r = _call(args, "POST", "/api/promote", {"release": args.release, "from": args.source, "to": args.target})
    say(args, r, f"promoted {r['release']} ({r['digest'][:19]}) from {r['from']} to {r['to']}: {r['registry']} names "
                  f"it now; {r['to']} pulls it on its next poll and deploys it through its own smoke check and gate")
    return 0


def cmd_retry(args) -> int:
    r = _call(args, "POST", "/api/retry", {})
    say(args, r, f"retrying {r['commit'][:12]}: it deploys now even though it failed before (`hotplate logs`)")
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
    if r["outcome"] != "succeeded":
        return 1
    return _wait(args, r["commit"], "healthy", args.timeout) if args.wait and r["commit"] else 0


def cmd_restart(args) -> int:
    r = _call(args, "POST", "/api/restart", {})
    _emit(args, r, lambda r: "\n".join(r["log"]))
    if r["outcome"] != "succeeded":
        return 1
    return _wait(args, r["commit"], "healthy", args.timeout) if args.wait and r["commit"] else 0


def cmd_resume(args) -> int:
    r = _call(args, "POST", "/api/resume", {})
    if not r["resumed"]:
        say(args, r, "nothing happened: live was not pinned; auto-sync is on")
        return 1
    say(args, r, "resumed: auto-sync is on; the branch tip deploys if it is not live")
    return _wait(args, r["head"], "live", args.timeout) if args.wait else 0


def cmd_revert(args) -> int:
    r = _call(args, "POST", "/api/revert", {"commit": args.commit, "force": args.force})
    say(args, r, f"committed revert {r['commit'][:12]} on the hosted branch; it deploys now (`hotplate status`).\n"
                  "Run `git pull` in your clone before your next push.")
    return _wait(args, r["commit"], "live", args.timeout) if args.wait else 0
