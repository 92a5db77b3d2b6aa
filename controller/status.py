"""What ``hotplate status`` and ``hotplate diff`` show, computed from the
controller's state: derived, never stored, so it cannot go stale."""
from __future__ import annotations

import shutil
import sqlite3
import time
from dataclasses import asdict

import git

from hotplate.server.contract.fleet import HostReport
from hotplate.server.contract.report import read_all
from hotplate.server.metrics import WorkerMetrics

from .appconfig import ConfigStore
from .build import Builder
from .errors import HotplateError
from .fleet import condition
from .plan import load_manifest
from .ready import derive


def status(c) -> dict:
    """Live release, tracked head, sync state, health, modules and workers."""
    live, live_commit, tip, pinned = c.state.live_release(), c.state.live_commit(), c.observed, c.state.pinned()
    notices = [c.history.damage] if c.history.damage else []
    facts = c.facts(tip)
    ready = derive(facts)
    if facts.unreadable:
        notices.append(f"the deploy history cannot be read ({facts.unreadable}): failed commits are not shown")
    workers, exited = _workers(c)
    spec = c.state.release(live)
    modules = spec.modules if spec else ()
    config = {"live": spec.config if spec else None, "desired": c.desired_config(tip)}
    failure = None
    if ready.state == "Failed":
        failure = {"deploy": facts.failure["id"] if facts.failure else None, "reason": ready.reason,
                   "outcome": facts.failure["outcome"] if facts.failure else "failed",
                   "detail": facts.failure["detail"] if facts.failure else ready.message}
    return {
        "state": ready.state,
        "ready": {"reason": ready.reason, "message": ready.message},
        "config": config,
        "role": None if c.fleet is None else "leader" if c.leads() else "follower",
        "fleet": fleet(c),
        "health": health(c, live, workers),
        "pinned": pinned,
        # verified: it has passed its smoke check and gate (False while a deploy bakes it: on trial)
        "live": {"release": live, "commit": live_commit,
                 "verified": bool(live) and (v := c.state.verified()) is not None and v.release == live},
        "head": {"branch": c.settings.branch, "commit": tip,
                 "note": "the branch does not exist" if c.source and tip is None else None},
        "failure": failure,
        "progressing": {"deploy": c.active.id, "commit": c.active.commit} if c.active else None,
        "last_error": c.last_error,
        "notices": notices,
        "server": {"pid": c.server.pid, "restarts": c.server.restarts},
        "modules": [{"name": m.name, "source": m.source, "object": m.key[:12], "routes": len(m.routes) + len(m.websockets),
                     "workers_ok": sum(1 for w in workers.values() if w.release == live and
                                       any(x.name == m.name and x.ok for x in w.modules))}
                    for m in modules],
        "workers": [{"pid": pid, "release": w.release, **w.counters, "websockets": open_websockets(w.counters)}
                    for pid, w in sorted(workers.items())],
        "exited_workers": exited,
    }


def report(c) -> HostReport:
    """What this host tells its fleet (controller/fleet.py): what it serves, how healthy, its last failure."""
    live = c.state.live_release()
    workers, _ = _workers(c)
    return HostReport(release=live, commit=c.state.live_commit(), health=health(c, live, workers)["state"],
                      deploying=c.active.commit or "" if c.active else None, failed=c.last_failure,
                      role="leader" if c.leads() else "follower", at=time.time(),
                      recipient=ConfigStore(c.state).recipient())  # the leader shares config sets with it


def _workers(c):
    """The live workers' reports (those gunicorn counts) and the exited ones' totals."""
    _, exited = read_all(c.state.workers)
    return c.server.reports(), exited


def fleet(c) -> dict | None:
    """The fleet as etcd holds it: the rollout, and each host against what
    the rollout names for it (``Stale`` if it serves something else and is
    not deploying); None outside a fleet. A host cut off from etcd says so:
    ``connected`` false, and the error."""
    if c.fleet is None:
        return None
    out = {"host": c.fleet.host, "etcd": c.fleet.url, "connected": c.fleet.connected(),
           "last_contact": c.fleet.contact, "rollout": None, "hosts": []}
    try:
        hosts = c.fleet.hosts()
        rollout = c.fleet.rollout()
    except HotplateError as e:  # etcd gone (no hosts either), or a rollout key that holds garbage
        out["error"], rollout = str(e), None
        if e.reason != "BadRollout":
            return out
    if rollout is not None:
        out["rollout"] = {"release": rollout.target.release, "commit": rollout.target.commit,
                          "previous": rollout.previous.release if rollout.previous else None, "state": rollout.state,
                          "wave": rollout.wave, "waves": rollout.waves, "leader": rollout.leader,
                          "reason": rollout.reason}
    try:
        members = c.fleet.members()
    except HotplateError:
        members = {}
    for host in sorted(hosts.keys() | members.keys()):
        r = hosts.get(host)
        if rollout is not None:
            want = desired.release if (desired := rollout.desired(host)) else None
        else:
            want = r and r.release
        out["hosts"].append({"host": host, "role": r and r.role, "release": r and r.release, "desired": want,
                             "health": r and r.health, "state": condition(r, want),
                             "since": members.get(host) if r is None else None,
                             "failed": asdict(r.failed) if r and r.failed else None,
                             "error": r and r.error})
    return out


def health(c, live: str | None, workers: dict[int, dict]) -> dict:
    """Whether the app serves (Healthy, Degraded, Down) and why, apart from sync."""
    if c.server.pid is None:
        return {"state": "Down", "why": [c.server.why_down()]}
    serving = [w for w in workers.values() if not w.retiring]
    if not serving:
        return {"state": "Down", "why": ["no worker accepts connections"]}
    why = []
    if live is None:
        why.append("no release is live")
    want = c.server.config.workers
    if len(serving) < want:
        why.append(f"{len(serving)} of {want} workers accept connections")
    why += sorted({f"module {m.name} failed to load: {m.error}" for w in serving if w.release == live
                   for m in w.modules if not m.ok})
    why += [f"worker {w.pid} serves no release: {w.error}" for w in serving if w.error]
    return {"state": "Degraded" if why else "Healthy", "why": why}


def open_websockets(counters: dict) -> int:
    """A worker's open WebSocket connections, from its counters."""
    return counters["ws_opened"] + counters["ws_moved_in"] - counters["ws_closed"] - counters["ws_moved_out"]


def diff(c) -> dict:
    """What deploying the branch head would change against live: modules to
    rebuild, routes added and removed."""
    tip = c.source.tip() if c.source else None
    if tip is None:
        return {"head": None, "error": "the tracked branch does not exist"}
    live = c.state.release(c.state.live_release())
    live_modules = live.modules if live else ()
    try:
        app = c.source.checkout(tip)
    except (OSError, HotplateError) as e:
        return {"head": tip, "error": f"cannot check out {tip[:12]}: {e}"}
    try:
        manifest = load_manifest(app)
        builder = Builder(app, c.state.cache)
        live_keys = {m.name: m.key for m in live_modules}
        modules = []
        for mod in manifest.modules:
            key = builder.cached_key(builder.pre_key(mod, builder.command(mod)))
            change = "unchanged" if key and key == live_keys.get(mod.name) else \
                "cached" if key and builder.object(key).exists() else "rebuild"
            modules.append({"name": mod.name, "source": mod.source, "change": change})
        modules += [{"name": n, "change": "removed"} for n in live_keys if n not in {m.name for m in manifest.modules}]
    except HotplateError as e:
        return {"head": tip, "error": str(e)}
    finally:
        shutil.rmtree(app, ignore_errors=True)
    routes_new, routes_old = _routes(manifest.modules), _routes(live_modules)
    return {
        "head": tip, "live": c.state.live_release(), "modules": modules,
        "routes_added": [f"{m} {p} -> {routes_new[(m, p)]}" for m, p in sorted(routes_new.keys() - routes_old.keys())],
        "routes_removed": [f"{m} {p}" for m, p in sorted(routes_old.keys() - routes_new.keys())],
    }


def module_view(c) -> list[dict]:
    """Each live module: its routes with their requests, 5xx and p99 (from
    the workers' metrics), its crashes and timeouts, how many workers
    loaded it, and how its last build went (the newest deploy that built it)."""
    live = c.state.release(c.state.live_release())
    workers, _ = _workers(c)
    samples = [s for family in WorkerMetrics(c.state.metrics).collect() for s in family.samples]
    try:
        deploys = c.history.list(20)
    except sqlite3.Error:
        deploys = []
    out = []
    for m in live.modules if live else ():
        mine = [s for s in samples if s.labels.get("module") == m.name]
        build = next(({"deploy": d["id"], "outcome": d["outcome"], **b} for d in deploys for b in d["modules"]
                      if b.get("name") == m.name), None)
        routes = [{"method": "WS" if r in m.websockets else ",".join(r.methods), "path": r.path,
                   "handler": getattr(r, "handler", None) or r.on_message, **_route_figures(mine, r.path)}
                  for r in (*m.routes, *m.websockets)]
        out.append({"name": m.name, "source": m.source, "object": m.key[:12], "routes": routes, "build": build,
                    "crashes": sum(s.value for s in mine if s.name == "hotplate_handler_crashes_total"),
                    "timeouts": sum(s.value for s in mine if s.name == "hotplate_handler_timeouts_total"),
                    "workers_ok": sum(1 for w in workers.values() if w.release == live.id and
                                      any(x.name == m.name and x.ok for x in w.modules)),
                    "workers": len(workers)})
    return out


def _route_figures(samples, path: str) -> dict:
    """A route's requests, 5xx and p99 in ms (the upper bound of the bucket
    that holds the 99th percentile; None before any request)."""
    mine = [s for s in samples if s.labels.get("route") == path]
    requests = sum(s.value for s in mine if s.name == "hotplate_http_requests_total")
    errors = sum(s.value for s in mine if s.name == "hotplate_http_requests_total" and s.labels.get("code") == "5xx")
    buckets = sorted(((float(s.labels["le"]), s.value) for s in mine
                      if s.name == "hotplate_http_request_duration_seconds_bucket"), key=lambda b: b[0])
    total = buckets[-1][1] if buckets else 0
    p99 = next((le for le, n in buckets if n >= 0.99 * total), None) if total else None
    return {"requests": int(requests), "errors_5xx": int(errors),
            "p99_ms": None if p99 is None or p99 == float("inf") else p99 * 1000}


def _routes(modules) -> dict[tuple[str, str], str]:
    """(method or WS, path) -> module.handler, for a manifest's or a release's modules."""
    routes = {(meth, r.path): f"{mod.name}.{r.handler}" for mod in modules for r in mod.routes for meth in r.methods}
    return routes | {("WS", w.path): f"{mod.name}.{w.on_message}" for mod in modules for w in mod.websockets}


def releases(c) -> list[dict]:
    """The retained releases, newest first: commit, its message, when built,
    whether live or pinned, and whether it ever passed its health gate (one
    that did not is no place to roll back to)."""
    live, pinned = c.state.live_release(), c.state.pinned()
    try:
        passed = {release for release, _ in c.history.live_releases(limit=1000)}
    except sqlite3.Error:
        passed = None  # the history cannot be read: not known (status says why)
    verified = c.state.verified()
    if verified and passed is not None:
        passed.add(verified.release)
    out = []
    for path in c.state.releases.iterdir():
        if path.name.startswith(".") or c.state.release(path.name) is None:
            continue
        built = c.state.build_info(path.name)
        commit = built.get("commit")
        try:
            message = c.source.commit_info(commit)["message"] if c.source and commit else None
        except (ValueError, git.GitError):
            message = None  # a commit no longer in the repository
        out.append({"release": path.name, "commit": commit, "message": message, "built_at": built.get("built_at"),
                    "live": path.name == live, "pinned": path.name == pinned, "passed": None if passed is None else path.name in passed})
    return sorted(out, key=lambda r: r["built_at"] or 0, reverse=True)
