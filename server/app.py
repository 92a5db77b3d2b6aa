"""The Flask app behind the module routes: reserved ``/_hotplate/`` paths and errors."""
from __future__ import annotations

import os

from flask import Blueprint, Flask, current_app, jsonify

from .config import RESERVED_PREFIX, ServerConfig
from .dispatch import Dispatcher

bp = Blueprint("hotplate", __name__, url_prefix=RESERVED_PREFIX)


def _modules():
    return current_app.extensions["hotplate"].modules


@bp.get("/health")
def health():
    """200 once this worker serves a release with every module loaded, else 503."""
    modules = _modules()
    failed = [m.name for m in modules.modules if not m.ok] if modules else []
    ok = modules is not None and not failed
    return jsonify(status="ok" if ok else "degraded", release=modules.release_id if modules else None,
                   pid=os.getpid(), failed_modules=failed), 200 if ok else 503


@bp.get("/ready")
def ready():
    """200 while this worker serves a release this host may serve: the one
    verified for it (it passed its gate and, in a fleet, the fleet's
    rollout), or the live one unless the controller gating it died; else 503. What
    a load balancer probes (the master's fence, server/gunicorn_app.py,
    says which: a controller killed mid-gate makes it 503 at once)."""
    dispatcher = current_app.extensions["hotplate"]
    modules = dispatcher.modules
    layout = dispatcher.layout
    verified = layout.verified() if layout else None
    release = modules.release_id if modules else None
    ok = release is not None and layout is not None and layout.ready(release) and \
        all(m.ok for m in modules.modules)
    return jsonify(ready=ok, release=release, verified=verified.release if verified else None,
                   pid=os.getpid()), 200 if ok else 503


@bp.get("/release")
def release():
    """The release this worker serves, and each module's state in it."""
    modules = _modules()
    if modules is None:
        return jsonify(release=None, pid=os.getpid(), modules=[]), 503
    return jsonify(
        release=modules.release_id, pid=os.getpid(),
        modules=[{"name": m.name, "source": m.source, "ok": m.ok, "error": m.error,
                  "routes": [{"path": r.spec.path, "methods": list(r.spec.methods), "handler": r.spec.handler}
                             for r in m.routes],
                  "websockets": [{"path": w.spec.path, "handlers": w.spec.symbols, "subprotocols": list(w.spec.subprotocols)}
                                 for w in m.sockets]}
                 for m in modules.modules])


def create_app(config: ServerConfig | None = None) -> Dispatcher:
    """The WSGI callable gunicorn serves: the module dispatcher in front of Flask."""
    app = Flask(__name__)
    app.register_blueprint(bp)

    @app.errorhandler(404)
    def not_found(e):
        return jsonify(error="no route matches this path", status=404), 404

    dispatcher = Dispatcher(app.wsgi_app, config or ServerConfig.from_env())
    app.extensions["hotplate"] = dispatcher
    return dispatcher
