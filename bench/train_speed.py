"""Training throughput of lmtune's loop on the built-in SmolLM2-135M with LoRA: fp32 vs bf16, compile on/off.

    python bench/train_speed.py                 # every variant, alternating, 2 rounds
    python bench/train_speed.py --variant fp32  # one variant in this process (used by the driver)
    python bench/train_speed.py --batch-size 2 --steps 3 --variants fp32 bf16   # bf16 on a small batch

Each variant runs in its own process (so peak RSS is its own) on the same 64 TweetEval emotion
examples, LoRA r16 on all linear layers, batch 16, packed; it prints supervised and total tokens/s
over the steps after the first (warm-up, and compilation when on) and the peak resident memory.
Results are appended to bench/results/train_speed.jsonl.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"},
            "fp32-compile": {"precision": "fp32", "compile": True}}
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tweeteval" / "emotion"


def run_variant(name: str, steps: int, batch_size: int = 16) -> dict:
    import torch

    from lmtune.config import RunConfig
    from lmtune.data.formats import load_examples
    from lmtune.data.encode import encode_example
    from lmtune.model.adapters import apply_peft
    from lmtune.model.load import load_model
    from lmtune.train.loop import fit
    from lmtune.train.methods import build_objective

    cfg = RunConfig.model_validate({
        "data": {"instruction": "Which emotion does this tweet express: {labels}?\n\n{text}",
                 "system_prompt": "Answer with one word.",
                 "label_names": ["anger", "joy", "optimism", "sadness"]},
        "training": {"batch_size": batch_size, "max_steps": steps, "progress_bar": False, "eval_every": 10_000,
                     "save_every": 10_000, **VARIANTS[name]},
    })
    examples, _, _ = load_examples(DATA / "train_text.txt")
    model, tok = load_model(cfg.model)
    encoded = [encode_example(e, tok, cfg.data) for e in examples[: batch_size * steps]]
    model = apply_peft(model, cfg.method, cfg.lora)
    times: list[float] = []
    last = [time.perf_counter()]

    def clock(step, record):
        if record["kind"] != "train":  # evaluations are reported too; time optimizer steps only
            return
        now = time.perf_counter()
        times.append((now - last[0], record["tokens"], record["supervised_tokens"]))
        last[0] = now

    import tempfile

    with tempfile.TemporaryDirectory() as out:
        result = fit(model, encoded, [], build_objective(cfg, tok), cfg.training, Path(out), on_step=clock)
    warm = times[1:]  # the first step pays for warm-up (and compilation)
    secs = sum(t for t, _, _ in warm)
    return {
        "variant": name, "steps": steps, "threads": torch.get_num_threads(),
        "tokens_per_s": sum(n for _, n, _ in warm) / secs,
        "supervised_tokens_per_s": sum(s for _, _, s in warm) / secs,
        "first_step_s": times[0][0], "median_step_s": statistics.median(t for t, _, _ in warm),
        "peak_rss_mb": result.peak_memory_mb, "final_loss": result.train_losses[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(VARIANTS))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--variants", nargs="+", default=sorted(VARIANTS), choices=sorted(VARIANTS))
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.steps, args.batch_size)))
        return
    out = ROOT / "bench" / "results" / "train_speed.jsonl"
    for round_ in range(args.rounds):
        for name in args.variants:  # alternate variants so machine drift hits all alike
            proc = subprocess.run([sys.executable, __file__, "--variant", name, "--steps", str(args.steps),
                                   "--batch-size", str(args.batch_size)],
                                  capture_output=True, text=True, check=True)
            record = json.loads(proc.stdout.strip().splitlines()[-1]) | {"round": round_}
            print(f"{name:14s} {record['tokens_per_s']:7.1f} tok/s  {record['supervised_tokens_per_s']:6.2f} sup tok/s  "
                  f"first step {record['first_step_s']:6.1f} s  peak RSS {record['peak_rss_mb']:6.0f} MB")
            with open(out, "a") as fh:
                fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
