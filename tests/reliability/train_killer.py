"""Kill `lmtune train` with SIGKILL at many points, resume each time, and record what every run ended with.

    python tests/reliability/train_killer.py WORK [--max-steps 6] [--random-kills 6] [--seed 0]

Imports lmtune once, trains an uninterrupted reference run in this process (which also warms every lazy
import), then forks training processes that die by SIGKILL:
  * scripted: a chain of kills at (step, phase) points; the child kills itself at the point, so a
    kill lands deterministically *inside* a checkpoint write or the deletion of an old one (PHASES);
  * random: this process SIGKILLs the child after a random delay.
After every kill it checks that each checkpoint folder on disk is complete and loadable, then resumes
(`run_training(resume=run_dir)`, or a fresh run when no checkpoint exists yet) until a run finishes.
Writes WORK/summary.json: the kills, the violations found, and the run folders to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# In order of occurrence within one optimizer step.
PHASES = ("after-step", "best-swap", "mid-write", "before-rename", "after-rename", "mid-prune")
CHECKPOINT_FILES = ("trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json")


def config(out: Path, max_steps: int):
    from lmtune.config_file import load_config

    return load_config(ROOT / "configs" / "tiny.yaml", [
        "training.num_threads=1", "eval.at_end=false", f"training.max_steps={max_steps}", "training.save_every=1",
        "training.eval_every=2", "training.log_every=1", "training.keep_checkpoints=2",
        "data.max_train_examples=64", "data.max_validation_examples=8", f"output.dir={out}"])


def arm(step: int, phase: str, fired: Path) -> None:
    """In a forked child: SIGKILL ourselves when training reaches `phase` of optimizer step `step` (or the
    first point after it, when that step never passes through the phase, e.g. no new best weights)."""
    from lmtune.train import checkpoint as ckpt
    from lmtune.train.metrics_log import MetricsLog

    now = {"step": 0}

    def due(at: str) -> bool:
        return (now["step"], PHASES.index(at)) >= (step, PHASES.index(phase))

    def die(at: str) -> None:
        if due(at):
            with open(fired, "a") as f:  # where it really died, for the summary
                f.write(json.dumps([now["step"], at]) + "\n")
            os.kill(os.getpid(), signal.SIGKILL)

    write = MetricsLog.write

    def logged(self, record):
        write(self, record)
        if record.get("kind") == "train":
            now["step"] = record["step"]
            die("after-step")  # the step is taken and logged; its checkpoint is not written yet

    rng_state = ckpt.rng_state

    def mid_write():
        die("mid-write")  # weights, optimizer and scheduler files are in the temporary folder; rng and state not
        return rng_state()

    replace = os.replace

    def replacing(src, dst):
        src, dst = Path(src), Path(dst)
        if src.name.startswith(".step-"):
            die("before-rename")  # the complete temporary folder, fsynced, not yet renamed into place
        if src.name == "best":
            die("best-swap")  # the previous best moved aside, the new one not yet in place
        replace(src, dst)

    prune = ckpt.prune_checkpoints

    def pruning(folder, keep):
        die("after-rename")  # the checkpoint is in place, older ones not yet pruned
        prune(folder, keep)

    rmtree = shutil.rmtree

    def removing(path, *args, **kwargs):
        name = Path(path).name
        if name.startswith(("step-", ".deleting-")) and due("mid-prune"):
            files = sorted(Path(path).iterdir())
            files[0].unlink()  # one file of the old checkpoint is gone, the rest not yet
            die("mid-prune")
        rmtree(path, *args, **kwargs)

    MetricsLog.write, ckpt.rng_state, os.replace, ckpt.prune_checkpoints = logged, mid_write, replacing, pruning
    shutil.rmtree = removing


def run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("tiny-*") if p.is_dir())


def resume_point(out: Path) -> Path | None:
    from lmtune.train.checkpoint import latest_checkpoint

    for run in reversed(run_dirs(out)):
        if latest_checkpoint(run / "checkpoints") is not None:
            return run
    return None


def child(out: Path, max_steps: int, point: tuple[int, str] | None) -> None:
    """The training process: resume the newest run with a checkpoint, else start one."""
    from lmtune.pipeline.training import run_training

    if point is not None:
        arm(*point, out / "fired.jsonl")
    resume = resume_point(out)
    run_training(config(out, max_steps), resume=str(resume) if resume else None, echo=lambda s: None)


def spawn(out: Path, max_steps: int, point: tuple[int, str] | None) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child(out, max_steps, point)
        except BaseException as err:  # noqa: BLE001 - reported through the exit status
            print(f"training child failed: {err!r}", file=sys.stderr)
            code = 1
        os._exit(code)
    return pid


def audit(out: Path) -> list[str]:
    """Every checkpoint folder on disk is complete and loads; returns what is wrong."""
    import torch
    from safetensors.torch import load_file

    wrong = []
    for run in run_dirs(out):
        for folder in sorted((run / "checkpoints").glob("step-*")):
            missing = [f for f in CHECKPOINT_FILES if not (folder / f).is_file()]
            if missing:
                wrong.append(f"{folder}: missing {missing}")
                continue
            try:
                load_file(folder / "trainable.safetensors")
                for name in ("optimizer.pt", "scheduler.pt", "rng.pt"):
                    torch.load(folder / name, weights_only=True)
                json.loads((folder / "state.json").read_text())
            except Exception as err:  # noqa: BLE001 - any failure to load is the finding
                wrong.append(f"{folder}: does not load: {err!r}")
        best = run / "checkpoints" / "best"
        if best.exists() and not (best / "trainable.safetensors").is_file():
            wrong.append(f"{best}: incomplete")
    return wrong


def scenario(out: Path, max_steps: int, points: list[tuple[int, str] | None], delays: list[float]) -> dict:
    """Run the kill points (scripted, or None = random delay) in order, resuming after each, then finish."""
    from lmtune.train.checkpoint import latest_checkpoint

    kills, missed, violations, started = [], [], [], time.time()
    queue = list(zip(points, delays))
    while True:
        point, delay = queue.pop(0) if queue else (None, None)
        pid = spawn(out, max_steps, point)
        status = None
        if point is None and delay is not None:
            deadline = time.time() + delay
            while status is None and time.time() < deadline:
                done, code = os.waitpid(pid, os.WNOHANG)
                status = code if done else None
                time.sleep(0.01)
            if status is None:
                os.kill(pid, signal.SIGKILL)
        if status is None:
            _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            run = resume_point(out)  # for a random kill: how far the run had got (its newest checkpoint)
            latest = latest_checkpoint(run / "checkpoints").name if run else None
            kills.append(list(point) if point else ["random", round(delay, 3), latest])
            violations += audit(out)
            continue
        if os.waitstatus_to_exitcode(status) != 0:
            violations.append(f"training child exited {os.waitstatus_to_exitcode(status)} after kills {kills[-3:]}")
            break
        # It finished before the kill: the run is over, so the points left are missed too.
        missed += [list(p) if p else ["random", d] for p, d in [(point, delay)] + queue if p or d is not None]
        break
    fired = out / "fired.jsonl"
    actual = [json.loads(ln) for ln in fired.read_text().splitlines()] if fired.exists() else []
    finished = [str(r) for r in run_dirs(out) if "result" in json.loads((r / "lmtune.json").read_text() or "{}")]
    leftovers = [str(p) for r in finished for p in (Path(r) / "checkpoints").glob(".*")]
    return {"kills": kills, "fired_at": actual, "missed": missed, "violations": violations + audit(out), "finished": finished,
            "leftovers": leftovers, "seconds": round(time.time() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--random-kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from lmtune.pipeline.training import run_training

    started = time.time()
    reference = run_training(config(args.work / "reference", args.max_steps), echo=lambda s: None)
    summary = {"reference": str(reference), "reference_seconds": round(time.time() - started, 2)}
    # best-swap only where a new best replaces an old one (even steps from 4). A kill after the rename
    # resumes *after* that step's pruning, so each step gets after-rename or (odd steps from 3, where
    # keep_checkpoints=2 leaves an old checkpoint to delete) mid-prune.
    scripted = [(s, p) for s in range(1, args.max_steps + 1) for p in PHASES
                if (p != "best-swap" or (s % 2 == 0 and s >= 4))
                and (p != "after-rename" or s < 3 or s % 2 == 0) and (p != "mid-prune" or (s >= 3 and s % 2))]
    summary["scripted"] = scenario(args.work / "scripted", args.max_steps, scripted, [None] * len(scripted))
    # Random kills get a run twice as long, and delays that are a fraction of its (warm) duration: short
    # enough that each kill leaves work for the next, so they land in start-up, steps and checkpoint writes.
    started = time.time()
    summary["random_reference"] = str(run_training(config(args.work / "random-reference", 2 * args.max_steps),
                                                   echo=lambda s: None))
    summary["random_reference_seconds"] = round(time.time() - started, 2)
    rng = random.Random(args.seed)
    delays = [rng.uniform(0.05, 0.35) * summary["random_reference_seconds"] for _ in range(args.random_kills)]
    summary["random"] = scenario(args.work / "random", 2 * args.max_steps, [None] * len(delays), delays)
    (args.work / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
