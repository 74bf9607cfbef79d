"""Entry point of the worker processes: `python -m lmtune.serve.worker` (the loop, or one training run).

Usage (the server starts these itself unless start_workers is off):
    python -m lmtune.serve.worker --data-dir DIR [--index 0] [--parent-pid PID] [--settings -]   # the polling loop
    python -m lmtune.serve.worker train --config JOB.yaml [--resume RUN]                    # one training run

Training runs `lmtune.pipeline.training.run_training` — the code path of `lmtune train` — in a process
started by the worker's executor (lmtune.execute: a child process, or a Ray task on some node), so a
cancel or pause can stop it at once (SIGTERM) and a crash cannot take the worker down (the loop
itself: lmtune.serve.worker_loop). With --parent-pid the loop binds its life to the server
(lmtune.execute.lifeline) before anything heavy is imported, and the local executor binds each
training child to the worker the same way: a server killed at any moment takes its workers with it,
and a worker its training child.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, TYPE_CHECKING

from lmtune.execute.lifeline import bind_to_parent

if TYPE_CHECKING:
    from lmtune.serve.config import ServeConfig

PRIVATE_UMASK = 0o077  # everything the service writes is readable by its user only


def _train(args: argparse.Namespace) -> int:
    from lmtune.config_file import load_config
    from lmtune.pipeline.training import run_training

    run_training(load_config(args.config), resume=args.resume, echo=lambda line: print(line, flush=True))
    return 0


def load_settings(data_dir: str, stream: IO[str] | None = None) -> ServeConfig:
    """The worker's settings: from `stream` (the server's own, `--settings -`), else <data_dir>/serve.json."""
    from pathlib import Path

    from lmtune.serve.config import ServeConfig

    if stream is not None:
        return ServeConfig.model_validate_json(stream.read())
    settings = Path(data_dir).expanduser().resolve() / "serve.json"
    return ServeConfig.model_validate_json(settings.read_text()) if settings.exists() else ServeConfig(data_dir=data_dir)


def _serve_loop(args: argparse.Namespace) -> int:
    if args.parent_pid is not None:
        bind_to_parent(args.parent_pid)  # Worker.run also polls for it, for platforms without the signal
    import fcntl

    from lmtune.serve.worker_loop import Worker

    cfg = load_settings(args.data_dir, sys.stdin if args.settings == "-" else None)
    cfg.make_root()
    with open(cfg.root / f"worker-{args.index}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a predecessor that is still exiting holds it for a moment
        Worker(cfg, args.index).run(parent=args.parent_pid)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m lmtune.serve.worker`."""
    argv = sys.argv[1:] if argv is None else argv
    os.umask(PRIVATE_UMASK)  # also when started by hand; the training child inherits it
    if argv[:1] == ["train"]:
        parser = argparse.ArgumentParser(prog="lmtune.serve.worker train")
        parser.add_argument("--config", required=True)
        parser.add_argument("--resume", default=None)
        return _train(parser.parse_args(argv[1:]))
    parser = argparse.ArgumentParser(prog="lmtune.serve.worker")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the server) dies")
    parser.add_argument("--settings", choices=["-"], default=None,
                        help="read the settings from stdin (the server passes its own) instead of serve.json")
    return _serve_loop(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
