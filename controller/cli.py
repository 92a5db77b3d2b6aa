"""The ``hotplate`` command."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from server.config import ServerConfig

from .errors import BuildError, HotplateError
from .pipeline import build_release, format_module
from .state import State


def _state(args) -> State:
    root = Path(args.state or os.environ.get("HOTPLATE_STATE") or Path(args.app) / ".hotplate").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return State(root).make()


def _build(args) -> tuple[State, object]:
    state = _state(args)
    print(f"building {Path(args.app).resolve()} into {state.root}", flush=True)
    try:
        outcome = build_release(Path(args.app), state, on_module=lambda m: print("  " + format_module(m), flush=True))
    except BuildError as e:
        for result in e.results:
            print("  " + format_module(result))
            if result.diagnostics:
                print("    " + result.diagnostics.rstrip().replace("\n", "\n    "))
        raise
    for result in outcome.build.modules:
        if result.diagnostics.strip():
            print(f"  warnings from {result.source}:\n    " + result.diagnostics.rstrip().replace("\n", "\n    "))
    how = "reused" if outcome.release.reused else "created"
    print(f"release {outcome.release.id} {how} ({outcome.build.compiled} compiled, "
          f"{len(outcome.build.modules) - outcome.build.compiled} cached, {outcome.build.seconds * 1000:.0f} ms)")
    return state, outcome


def cmd_build(args) -> int:
    _build(args)
    return 0


def cmd_serve(args) -> int:
    from server.gunicorn_app import HotplateServer

    state, outcome = _build(args)
    state.switch(outcome.release.id)
    config = ServerConfig.from_env(bind=args.bind, workers=args.workers, threads=args.threads)
    print(f"serving release {outcome.release.id} on http://{config.bind}/", flush=True)
    HotplateServer(state.current, config, state.run, state.root).run()
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hotplate", description="Serve C modules from git, rolled without downtime.")
    sub = p.add_subparsers(dest="command", required=True)

    def app_command(name: str, help: str, func):
        sp = sub.add_parser(name, help=help)
        sp.add_argument("app", nargs="?", default=".", help="app directory holding deploy.yaml (default: .)")
        sp.add_argument("--state", help="state directory (default: APP/.hotplate, or $HOTPLATE_STATE)")
        sp.set_defaults(func=func)
        return sp

    app_command("build", "validate deploy.yaml and build a release", cmd_build)
    serve = app_command("serve", "build the app and serve it with gunicorn", cmd_serve)
    serve.add_argument("--bind", help="address to listen on (default 127.0.0.1:8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 2)")
    serve.add_argument("--threads", type=int, help="threads per worker (default 8)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except HotplateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
