"""``python -m hotplate.server --state STATE``: serve the release STATE's ``current`` link points to.

The controller starts the server this way (``hotplate up``, ``hotplate serve``)
so that the gunicorn master is its own process with its own pid file.
"""
from __future__ import annotations

import argparse

from .config import ServerConfig
from .contract.layout import Layout
from .gunicorn_app import HotplateServer


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m hotplate.server")
    p.add_argument("--state", required=True, type=Layout,
                   help="the state directory: its current link is served (server/contract/layout.py)")
    p.add_argument("--bind")
    p.add_argument("--workers", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--max-requests", type=int)
    p.add_argument("--max-rss", type=int)
    p.add_argument("--user", help="account the workers run as (the master must be root)")
    p.add_argument("--dev-errors", help="hotplate dev: while this file exists, every request gets it as an error page")
    p.add_argument("--store", help="the modules' key-value store: lmdb:PATH or redis://HOST:PORT/DB")
    p.add_argument("--jobs", type=int, help="background jobs run at once (0: no job runner)")
    p.add_argument("--nats", help="NATS server for WebSocket publications across hosts (nats://HOST:PORT)")
    p.add_argument("--config-dir", help="where the releases' config sets are rendered (hp_config)")
    args = p.parse_args()
    config = ServerConfig.from_env(bind=args.bind, workers=args.workers, threads=args.threads,
                                   max_requests=args.max_requests, max_rss=args.max_rss, user=args.user,
                                   dev_errors=args.dev_errors, store=args.store,
                                   config_dir=args.config_dir, jobs=args.jobs,
                                   nats=args.nats)
    HotplateServer(args.state, config).run()


if __name__ == "__main__":
    main()
