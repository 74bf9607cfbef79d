"""One run on several data-parallel processes: `lmtune train` starts its ranks through `accelerate launch`.

Usage (lmtune.cli does this when training.num_processes > 1):
    if needs_launch(cfg.training):
        return launch_ranks(cfg.training.num_processes, ["train", "run.yaml", ...])   # the ranks' exit code

Each rank runs the same `lmtune train` command; accelerate sets RANK/WORLD_SIZE, so a rank never
launches again. On a machine without GPUs the ranks talk over gloo; with GPUs over NCCL, one GPU per
rank. The loop divides each step's loss by the supervised tokens of the whole step over all ranks,
so N processes with batch_size B train as one process with batch_size B and grad_accum N.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from lmtune.config import TrainingConfig


def in_launched_rank() -> bool:
    """Whether this process is already one rank of a launched group (torch.distributed's variables)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def needs_launch(cfg: TrainingConfig) -> bool:
    """Whether `lmtune train` must start its ranks itself: several processes asked, none started yet."""
    return cfg.num_processes > 1 and not in_launched_rank()


def free_port() -> int:
    """A TCP port free on this machine now, for the ranks' rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_args(num_processes: int, module: str, args: list[str], port: int) -> list[str]:
    """Arguments of `python -m accelerate.commands.launch` running `python -m module *args` as ranks here."""
    # --multi_gpu is accelerate's multi-process DDP; without GPUs it runs on CPU over gloo. Mixed precision
    # "no" only sets accelerate's default: each rank's Accelerator takes training.precision.
    return ["--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(port), "-m", module, *args]


def launch_ranks(num_processes: int, cli_args: list[str]) -> int:
    """Run `lmtune *cli_args` as ranks to their end; the group's exit code (non-zero when any rank failed)."""
    command = [sys.executable, "-m", "accelerate.commands.launch",
               *launch_args(num_processes, "lmtune.cli", cli_args, free_port())]
    return subprocess.run(command, check=False).returncode
