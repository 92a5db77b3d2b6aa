"""What ``hotplate status`` and ``hotplate diff`` show, computed from the
controller's state: derived, never stored, so it cannot go stale."""
from __future__ import annotations

import shutil

from server.report import pid_alive, read_reports

from .build import Builder
from .errors import HotplateError
from .plan import load_manifest


def release_info(state, release_id: str | None) -> dict | None:
    if not release_id:
        return None
    return state.read_json(state.release_path(release_id) / "release.json")


def status(c) -> dict:
    """Live release, tracked head, sync state, modules and workers."""
    live, live_commit, tip, pinned = c.state.live_release(), c.live_commit(), c.observed, c.pinned()
    failure = c.history.failure(tip) if tip else None
    if pinned:
        sync = "Pinned"
    elif c.active is not None:
        sync = "Progressing"
    elif failure:
        sync = "Failed"
    elif tip is not None and tip == live_commit:
        sync = "Synced"
    else:
        sync = "OutOfSync"
    info = release_info(c.state, live) or {"modules": []}
    workers = {pid: r for pid, r in read_reports(c.state.workers).items() if pid_alive(pid)}
    return {
        "state": sync,
        "pinned": pinned,
        "live": {"release": live, "commit": live_commit},
        "head": {"branch": c.settings.branch, "commit": tip,
                 "note": "the branch does not exist" if c.source and tip is None else None},
        "failure": {"deploy": failure["id"], "reason": failure["reason"], "detail": failure["detail"]} if failure else None,
        "progressing": {"deploy": c.active.id, "commit": c.active.commit} if c.active else None,
        "last_error": c.last_error,
        "modules": [{"name": m["name"], "source": m["source"], "object": m["key"][:12], "routes": len(m["routes"]) + len(m.get("websockets", [])),
                     "workers_ok": sum(1 for w in workers.values() if w["release"] == live and
                                       any(x["name"] == m["name"] and x["ok"] for x in w["modules"]))}
                    for m in info["modules"]],
        "workers": [{"pid": pid, "release": w["release"], **w["counters"], "websockets": open_websockets(w["counters"])}
                    for pid, w in sorted(workers.items())],
    }


def open_websockets(counters: dict) -> int:
    """A worker's open WebSocket connections, from its counters."""
    return counters["ws_opened"] + counters["ws_moved_in"] - counters["ws_closed"] - counters["ws_moved_out"]


def diff(c) -> dict:
    """What deploying the branch head would change against live: modules to
    rebuild, routes added and removed."""
    tip = c.source.tip() if c.source else None
    if tip is None:
        return {"head": None, "error": "the tracked branch does not exist"}
    live = release_info(c.state, c.state.live_release()) or {"modules": []}
    app = c.source.checkout(tip)
    try:
        manifest = load_manifest(app)
        builder = Builder(app, c.state.cache)
        live_keys = {m["name"]: m["key"] for m in live["modules"]}
        modules = []
        for mod in manifest.modules:
            key = builder.cached_key(builder.pre_key(mod, builder.command(mod)))
            change = "unchanged" if key and key == live_keys.get(mod.name) else \
                "cached" if key and (c.state.cache / "objects" / f"{key}.so").exists() else "rebuild"
            modules.append({"name": mod.name, "source": mod.source, "change": change})
        modules += [{"name": n, "change": "removed"} for n in live_keys if n not in {m.name for m in manifest.modules}]
    except HotplateError as e:
        return {"head": tip, "error": str(e)}
    finally:
        shutil.rmtree(app, ignore_errors=True)
    routes_new = {(meth, r.path): f"{mod.name}.{r.handler}" for mod in manifest.modules for r in mod.routes for meth in r.methods}
    routes_new |= {("WS", w.path): f"{mod.name}.{w.on_message}" for mod in manifest.modules for w in mod.websockets}
    routes_old = {(meth, r["path"]): f"{m['name']}.{r['handler']}" for m in live["modules"] for r in m["routes"]
                  for meth in r["methods"]}
    routes_old |= {("WS", w["path"]): f"{m['name']}.{w['on_message']}" for m in live["modules"]
                   for w in m.get("websockets", [])}
    return {
        "head": tip, "live": c.state.live_release(), "modules": modules,
        "routes_added": [f"{m} {p} -> {routes_new[(m, p)]}" for m, p in sorted(routes_new.keys() - routes_old.keys())],
        "routes_removed": [f"{m} {p}" for m, p in sorted(routes_old.keys() - routes_new.keys())],
    }
