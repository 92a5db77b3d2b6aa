"""The controller's own HTTP port: status as JSON, operator actions behind a
token, webhooks behind their signatures, git smart HTTP, Prometheus metrics.

Never the app's port: the app serves user code, this serves the operator.
"""
from __future__ import annotations

import hmac
import logging
import secrets
import sqlite3
import time
from functools import wraps
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, send_from_directory, session

from werkzeug.serving import WSGIRequestHandler

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from hotplate.server.metrics import WorkerMetrics

from . import actions, push
from .appconfig import COMMITTED, ConfigStore
from .errors import HotplateError
from .githttp import http_backend, pushes, repo_path
from .status import diff, module_view, releases, status
from .tokens import FIRST, NAME, Identity, Tokens, digest
from .webhooks import Deliveries, WebhookError, verify

bp = Blueprint("api", __name__)
DASHBOARD = Path(__file__).parent / "dashboard"
SESSION_HOURS = 12  # a dashboard session lasts this long, then signs in again
FOLLOW_LIMIT_S = 3600  # a follower of a deploy is let go after this long
log = logging.getLogger("hotplate.controller")


class RequestHandler(WSGIRequestHandler):
    """werkzeug's, but an HTTP/1.0 request is answered in HTTP/1.0: a
    streamed body ends where the connection does, not in chunked coding,
    which a 1.0 client need not read (RFC 9112, 7.1; the push hook,
    controller/pushhook.py, reads lines and nothing else)."""

    def run_wsgi(self) -> None:
        if self.request_version == "HTTP/1.0":
            self.protocol_version = "HTTP/1.0"
        super().run_wsgi()


def ctl():
    return current_app.extensions["controller"]


def identity() -> Identity | None:
    """Who the request is: a bearer token, a token as the HTTP Basic
    password (git over HTTP), or the dashboard's session cookie."""
    if "identity" not in g:
        g.identity, g.by_cookie = None, False
        tokens = Tokens(ctl().state)
        given = request.headers.get("Authorization", "")
        if given.startswith("Bearer "):
            g.identity = tokens.identify(given[7:].strip())
        elif request.authorization and request.authorization.password:
            g.identity = tokens.identify(request.authorization.password)
        elif session.get("token"):
            g.identity, g.by_cookie = tokens.by_digest(session["token"]), True
    return g.identity


def authorized() -> bool:
    """Whether the request may read what only people with a token may."""
    return identity() is not None


UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def requires(role: str):
    """A view only a token of ``role`` (or above) may call; a session
    cookie's unsafe call must also carry its CSRF token (``X-CSRF-Token``),
    which another site's page cannot read."""
    def decorate(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            who = identity()
            if who is None:
                # Basic for git over HTTP only: a browser would answer it with a password prompt
                challenge = {"WWW-Authenticate": 'Basic realm="hotplate"'} if request.path.startswith("/git/") else {}
                return Response("token required: Authorization: Bearer <token> (STATE/token, or one from "
                                "`hotplate token create`)\n", 401, challenge)
            if g.by_cookie and request.method in UNSAFE and not hmac.compare_digest(
                    request.headers.get("X-CSRF-Token", ""), session.get("csrf", "")):
                return jsonify(error="this session's X-CSRF-Token header is missing or wrong", reason="CSRF"), 403
            return view(*args, **kwargs) if who.may(role) else forbidden(role)
        return wrapped
    return decorate


def forbidden(role: str):
    who = identity()
    return jsonify(error=f"token {who.name!r} is a {who.role}: {request.method} {request.path} needs {role}; an "
                         f"admin can make one (`hotplate token create NAME --role {role}`)", reason="Forbidden"), 403


def actor() -> str | None:
    who = identity()
    return who.name if who else None


@bp.after_request
def audit(response: Response) -> Response:
    """Every call that changes something, and every refusal, in the audit
    log: who, what, and the answer. Reads are not: the dashboard's polls
    would bury the few calls an operator looks for."""
    if request.method in UNSAFE or response.status_code in (401, 403):
        who = identity()
        path = request.full_path.rstrip("?")
        try:
            ctl().history.audit(who and who.name, who and who.role, request.method, path, response.status_code,
                                request.remote_addr)
        except sqlite3.Error as e:
            log.warning("audit log: could not record %s %s by %s: %s", request.method, path, who, e)
    return response


@bp.errorhandler(HotplateError)
def hotplate_error(e: HotplateError):
    return jsonify(error=str(e), reason=e.reason), 409


#: The dashboard runs only its own files: no inline script, no other origin,
#: and no framing (its buttons roll back and revert).
DASHBOARD_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


@bp.get("/")
@bp.get("/ui/<path:name>")
def dashboard(name: str = "index.html"):
    """The dashboard: static files over this API (controller/dashboard/,
    its libraries vendored in vendor/)."""
    response = send_from_directory(DASHBOARD, name)
    response.headers["Content-Security-Policy"] = DASHBOARD_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/api/status")
def get_status():
    """Public as a summary; failure details and errors (which can quote
    source lines and paths) only with the token."""
    s = status(ctl())
    if not authorized():
        s["last_error"] = None
        if s["failure"]:
            s["failure"]["detail"] = None
    return jsonify(s)


@bp.post("/api/session")
def sign_in():
    """The dashboard signs in with a token once; the browser then holds a
    signed session cookie (HttpOnly: no script reads it; SameSite=Strict:
    no other site's page sends it) naming the token by its digest, so that
    revoking the token ends the session. The token itself is kept nowhere."""
    if not request.is_json:  # a cross-site form cannot send JSON without a preflight, which is not answered
        return jsonify(error='send {"token": "..."} as application/json', reason="BadSignIn"), 400
    secret = (request.get_json(silent=True) or {}).get("token")
    who = Tokens(ctl().state).identify(secret) if isinstance(secret, str) else None
    if who is None:
        return jsonify(error="that token is not valid (revoked, or mistyped)", reason="BadToken"), 401
    session.clear()
    session.permanent = True
    session["token"], session["csrf"] = digest(secret.strip()), secrets.token_urlsafe(24)
    g.identity = who
    return jsonify(name=who.name, role=who.role, csrf=session["csrf"])


@bp.get("/api/session")
@requires("viewer")
def whoami():
    """Who the caller is; with a session, the CSRF token its unsafe calls carry."""
    who = identity()
    return jsonify(name=who.name, role=who.role, csrf=session.get("csrf") if g.by_cookie else None)


@bp.delete("/api/session")
def sign_out():
    session.clear()
    return jsonify(signed_out=True)


@bp.get("/api/audit")
@requires("admin")
def audit_log():
    return jsonify(ctl().history.audit_log(request.args.get("limit", 100, type=int)))


@bp.get("/api/deploys")
@requires("viewer")
def list_deploys():
    return jsonify(ctl().history.list(int(request.args.get("limit", 20))))


@bp.get("/api/deploys/<int:deploy_id>")
@requires("viewer")
def get_deploy(deploy_id: int):
    row = ctl().history.get(deploy_id)
    return (jsonify(row), 200) if row else (jsonify(error=f"no deploy {deploy_id}"), 404)


@bp.get("/api/deploys/<int:deploy_id>/follow")
@requires("viewer")
def follow_deploy(deploy_id: int):
    """Stream a deploy's log as text lines: as they come while it runs, else
    the recorded log at once."""
    c = ctl()
    d = c.active
    if d is None or d.id != deploy_id:
        row = c.history.get(deploy_id)
        if not row:
            return jsonify(error=f"no deploy {deploy_id}"), 404
        return Response(row["log"] + "\n" if row["log"] else "", mimetype="text/plain")
    return Response((line + "\n" for line in push.stream(c, d, time.monotonic() + FOLLOW_LIMIT_S)), mimetype="text/plain")


@bp.get("/api/modules")
@requires("viewer")
def modules():
    return jsonify(module_view(ctl()))


@bp.get("/api/diff")
@requires("viewer")
def get_diff():
    return jsonify(diff(ctl()))


@bp.post("/api/sync")
@requires("deployer")
def sync():
    pinned = ctl().state.pinned()
    if pinned:
        return jsonify(accepted=False, pinned=pinned), 200
    c = ctl()
    c.ask(c.source.tip() if c.source else None, actor())
    c.wake("sync")
    return jsonify(accepted=True, head=ctl().source.tip() if ctl().source else None), 202


@bp.post("/api/retry")
@requires("deployer")
def retry():
    return jsonify(commit=actions.retry(ctl(), actor())), 202


@bp.post("/api/follow")
@requires("deployer")
def follow():
    """Stream, as text lines, the deploy of a pushed commit (the push hook).
    The pusher always gets a last line, even if following fails. The hook
    names the pusher (``pusher``): taken from the first admin token only,
    the hook's, so that no other token can say someone else pushed."""
    controller, sha = ctl(), request.args["commit"]
    pusher = request.args.get("pusher") if identity().name == FIRST else None
    pusher = pusher if pusher and NAME.fullmatch(pusher) else actor()

    def lines():
        try:
            for line in push.follow(controller, sha, pusher):
                yield line + "\n"
        except Exception as e:
            log.exception("following %s failed", sha)
            yield (f"the controller could not follow this push ({type(e).__name__}: {e}); "
                   "see `hotplate status` and `hotplate history`\n")
        yield push.END + "\n"

    return Response(lines(), mimetype="text/plain")


@bp.get("/api/notifications")
@requires("viewer")
def notifications():
    return jsonify(ctl().history.deliveries(request.args.get("limit", 50, type=int)))


@bp.get("/api/releases")
@requires("viewer")
def release_list():
    return jsonify(releases(ctl()))


@bp.post("/api/rollback")
@requires("deployer")
def rollback():
    d = actions.rollback(ctl(), (request.get_json(silent=True, force=True) or {}).get("to"), actor())
    return jsonify(deploy=d.id, outcome=d.outcome, commit=d.commit, log=d.lines)


@bp.post("/api/restart")
@requires("deployer")
def restart():
    d = actions.restart(ctl(), actor())
    return jsonify(deploy=d.id, outcome=d.outcome, commit=d.commit, log=d.lines)


@bp.post("/api/resume")
@requires("deployer")
def resume():
    return jsonify(resumed=actions.resume(ctl(), actor()), head=ctl().source.tip() if ctl().source else None)


@bp.post("/api/revert")
@requires("deployer")
def revert():
    body = request.get_json(silent=True, force=True) or {}
    return jsonify(commit=actions.revert(ctl(), body.get("commit"), bool(body.get("force")), actor()))


@bp.post("/api/promote")
@requires("deployer")
def promote():
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("from", "to")):
        return jsonify(error='expected {"release": id or null, "from": "staging", "to": "production"}',
                       reason="BadPromotion"), 400
    release = body.get("release") if isinstance(body.get("release"), str) else None
    return jsonify(actions.promote(ctl(), release, body["from"], body["to"], actor()))


@bp.get("/api/config")
@requires("viewer")
def config_list():
    """The app's config keys (secrets' values hidden), the recipient to
    encrypt committed values to, and which set is live and which desired."""
    controller = ctl()
    store = ConfigStore(controller.state)
    tip = controller.source.tip() if controller.source else None
    live = controller.state.release(controller.state.live_release())
    return jsonify(keys=store.listing(controller.source.show(tip, COMMITTED) if tip else None),
                   recipient=store.recipient(), live=live.config if live else None,
                   desired=controller.desired_config(tip))


@bp.post("/api/config")
@requires("admin")
def config_change():
    body = request.get_json(silent=True, force=True)
    set_, unset = (body.get("set") or {}, body.get("unset") or []) if isinstance(body, dict) else (None, None)
    if not isinstance(set_, dict) or not isinstance(unset, list) or not (set_ or unset) or not all(
            isinstance(v, str) for v in [*set_, *set_.values(), *unset]):
        return jsonify(error='expected {"set": {"KEY": "value"}, "unset": ["KEY"], "secret": bool}',
                       reason="BadConfig"), 400
    return jsonify(actions.change_config(ctl(), set_, unset, bool(body.get("secret")), actor())), 202


@bp.post("/api/config/encrypt")
@requires("deployer")
def config_encrypt():
    """A value encrypted to this controller, for the committed config.yaml."""
    value = (request.get_json(silent=True, force=True) or {}).get("value")
    if not isinstance(value, str):
        return jsonify(error='expected {"value": "text"}', reason="BadConfig"), 400
    return jsonify(armored=ConfigStore(ctl().state).encrypt(value))


@bp.post("/webhook")
def webhook():
    """GitHub, GitLab, Gitea or generic HMAC push: 202 at once, deploy in the background."""
    secret = current_app.config.get("WEBHOOK_SECRET")
    if not secret:
        return jsonify(error="webhooks are off: start hotplate up with --webhook-secret-file"), 404
    if (request.content_length or 0) > 1024 * 1024:
        return jsonify(error="body too large"), 413
    try:
        event = verify(request.headers, request.get_data(), secret)
    except WebhookError as e:
        return jsonify(error=str(e)), e.status
    if event.kind == "ping":
        return jsonify(pong=True, provider=event.provider)
    if current_app.extensions["deliveries"].replayed(event.delivery):
        return jsonify(ignored=f"delivery {event.delivery} was seen before (a replay)"), 200
    if event.kind != "push" or event.branch != ctl().settings.branch:
        return jsonify(ignored=f"{event.kind} to {event.branch}: tracking pushes to {ctl().settings.branch}"), 202
    ctl().wake("webhook")
    return jsonify(accepted=True, provider=event.provider, delivery=event.delivery), 202


@bp.route("/git/<path:path>", methods=["GET", "POST"])
@requires("viewer")
def git(path: str):
    """Fetch with any token; push with a deployer's, named as the pusher."""
    inside = repo_path(path)
    if inside is None:
        return Response("the hosted repository is /git/repo.git\n", 404)
    if pushes(inside) and not identity().may("deployer"):
        return forbidden("deployer")
    return http_backend(ctl().state.root, inside, identity().name)


@bp.get("/metrics")
def metrics():
    """Prometheus text format, through prometheus_client: the controller's
    own facts and the workers' metrics merged from their files."""
    registry = CollectorRegistry()
    registry.register(ControllerMetrics(ctl()))
    registry.register(WorkerMetrics(ctl().state.metrics))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


class ControllerMetrics:
    """App health, sync and deploys, read at each scrape (a custom collector)."""

    def __init__(self, controller):
        self.c = controller

    def collect(self):
        c = self.c
        s = status(c)
        yield GaugeMetricFamily("hotplate_up", "1 unless the app server is down",
                                value=0 if s["health"]["state"] == "Down" else 1)
        health = GaugeMetricFamily("hotplate_health", "The app's health state (1 for the current one)",
                                   labels=["state"])
        for state in ("Healthy", "Degraded", "Down"):
            health.add_metric([state], int(s["health"]["state"] == state))
        yield health
        yield CounterMetricFamily("hotplate_server_restarts", "Restarts of a dead app server by the supervisor",
                                  value=s["server"]["restarts"])
        yield GaugeMetricFamily("hotplate_pinned", "1 while a rollback pins live", value=1 if s["pinned"] else 0)
        deploys = CounterMetricFamily("hotplate_deploys", "Deploys ended, by outcome", labels=["outcome"])
        try:
            for outcome, n in c.history.outcomes().items():
                deploys.add_metric([outcome], n)
        except sqlite3.Error:
            pass  # status says why; the other figures still count
        yield deploys
        yield from c.stage_seconds.collect()


def create_api(controller, webhook_secret: str | None) -> Flask:
    app = Flask(__name__)
    app.config["WEBHOOK_SECRET"] = webhook_secret
    app.secret_key = controller.state.session_secret()
    app.config.update(SESSION_COOKIE_NAME="hotplate_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", PERMANENT_SESSION_LIFETIME=SESSION_HOURS * 3600)
    app.extensions["controller"] = controller
    app.extensions["deliveries"] = Deliveries()
    app.register_blueprint(bp)
    app.json.sort_keys = False
    return app
