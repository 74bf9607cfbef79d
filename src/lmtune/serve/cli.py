"""Command-line entry points: `lmtune serve` and `lmtune keys`.

Usage (wired into lmtune's CLI with add_serve_parser(sub) and add_keys_parser(sub)):
    lmtune serve --data-dir /srv/lmtune --host 0.0.0.0 --port 8000 [--config serve.yaml] [--database-url URL]
    lmtune keys create --project research [--data-dir /srv/lmtune]    # prints the key once
    lmtune keys list [--data-dir DIR]
    lmtune keys revoke KEY_ID [--data-dir DIR]

Each parser sets `func`, which takes the parsed arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

DEFAULT_DATA_DIR = "lmtune-data"  # relative to where the server is started; --data-dir or the config file overrides it


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP server (and its workers) until interrupted."""
    import uvicorn

    from lmtune.serve.app import create_app
    from lmtune.serve.config import load_serve_config
    from lmtune.serve.worker import PRIVATE_UMASK

    os.umask(PRIVATE_UMASK)  # database, logs, runs and caches private to this user; workers inherit it

    data_dir = args.data_dir or (None if args.config else DEFAULT_DATA_DIR)  # a config file may name it
    cfg = load_serve_config(args.config, data_dir=data_dir, host=args.host, port=args.port, workers=args.workers,
                            database_url=args.database_url)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # uvicorn's access log prints the raw request line only; our request log adds model, tokens, latency.
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, access_log=False, log_level="info")
    return 0


def _store(data_dir: str, database_url: str | None):
    from lmtune.serve.config import ServeConfig
    from lmtune.serve.store import Store

    return Store(ServeConfig(data_dir=data_dir, database_url=database_url).database)


def cmd_keys(args: argparse.Namespace) -> int:
    """Create, list or revoke API keys."""
    from lmtune.serve.auth import create_key, list_keys, revoke_key

    store = _store(args.data_dir, args.database_url)
    if args.action == "create":
        try:
            print(create_key(store, args.project))
        except ValueError as err:
            print(f"lmtune keys: error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.action == "revoke":
        if revoke_key(store, args.key_id):
            print(f"revoked {args.key_id}")
            return 0
        print(f"no such key: {args.key_id}")
        return 1
    for row in list_keys(store):
        print(f"{row['id']}  project={row['project']}  created={row['created_at']}"
              + ("  revoked" if row["revoked"] else ""))
    return 0


def add_serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `serve` to a subparsers object."""
    p = subparsers.add_parser("serve", help="run the OpenAI-compatible fine-tuning and inference service")
    p.add_argument("--config", default=None, help="YAML file of ServeConfig settings")
    p.add_argument("--data-dir", default=None, help=f"data folder (default {DEFAULT_DATA_DIR}, or the config's)")
    p.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=None, help="training worker processes (default 1)")
    p.add_argument("--database-url", default=None,
                   help="postgresql://... shared by replicas (default: SQLite in the data folder)")
    p.set_defaults(func=cmd_serve)
    return p


def add_keys_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `keys create|list|revoke` to a subparsers object."""
    p = subparsers.add_parser("keys", help="manage the API keys of `lmtune serve`")
    actions = p.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key for a project and print it (shown once)")
    create.add_argument("--project", required=True, help="project the key belongs to (created if new)")
    actions.add_parser("list", help="list keys (ids and projects, never the keys)")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    for sub in (create, actions.choices["list"], revoke):
        sub.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=f"data folder (default {DEFAULT_DATA_DIR})")
        sub.add_argument("--database-url", default=None,
                         help="the server's postgresql://... database (default: SQLite in the data folder)")
    p.set_defaults(func=cmd_keys)
    return p


def main(argv: list[str] | None = None) -> int:
    """`python -m lmtune.serve serve|keys ...` (the same commands without the lmtune CLI)."""
    parser = argparse.ArgumentParser(prog="python -m lmtune.serve")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(sub)
    add_keys_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)
