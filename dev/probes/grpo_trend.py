"""Did a GRPO run's reward rise? First vs last steps of metrics.jsonl, with a one-sided permutation test.

    python dev/probes/grpo_trend.py runs/preference/gsm8k-grpo-smollm2-<timestamp>
    python dev/probes/grpo_trend.py RUN --window 10 --keys train_reward train_reward_gsm8k_numeric

For each logged per-step value: the mean of the first and of the last `window` steps, the p-value of
"the last steps are higher" under random relabelling of those steps (100,000 permutations, seed 0),
the same for the two halves of the run, and the least-squares slope over all steps with the p of a
slope this large under random orderings of the steps (20,000). The docs' GRPO table quotes these numbers.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

KEYS = ("train_reward", "train_reward_gsm8k_numeric", "train_reward_answer_format", "train_completion_length",
        "train_kl")


def permutation_p(before: list[float], after: list[float], n: int = 100_000, seed: int = 0) -> float:
    """One-sided p of mean(after) - mean(before) being this large if the labels were exchangeable."""
    observed = sum(after) / len(after) - sum(before) / len(before)
    pool, rng, hits = before + after, random.Random(seed), 0
    for _ in range(n):
        rng.shuffle(pool)
        if sum(pool[len(before):]) / len(after) - sum(pool[:len(before)]) / len(before) >= observed - 1e-12:
            hits += 1
    return (hits + 1) / (n + 1)


def slope(values: list[float]) -> float:
    """Least-squares change per step."""
    n = len(values)
    mx, my = (n - 1) / 2, sum(values) / n
    return sum((x - mx) * (y - my) for x, y in enumerate(values)) / sum((x - mx) ** 2 for x in range(n))


def slope_p(values: list[float], n: int = 20_000, seed: int = 0) -> float:
    """One-sided p of the slope being this large if the steps came in random order."""
    observed, shuffled, rng, hits = slope(values), list(values), random.Random(seed), 0
    for _ in range(n):
        rng.shuffle(shuffled)
        hits += slope(shuffled) >= observed - 1e-12
    return (hits + 1) / (n + 1)


def main() -> None:
    """Print the first/last and half/half comparison of each key."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder (or its metrics.jsonl)")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--keys", nargs="+", default=list(KEYS))
    args = parser.parse_args()
    path = args.run / "metrics.jsonl" if args.run.is_dir() else args.run
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in records if r.get("kind") == "train"]
    print(f"{path}: {len(train)} steps")
    for r in records:
        if r.get("kind") == "eval":
            print(f"  eval at step {r['step']}: " + ", ".join(f"{k} {v:.4f}" for k, v in r.items()
                                                             if k.startswith("eval_") and isinstance(v, float)))
    for key in args.keys:
        values = [r[key] for r in train if key in r]
        if len(values) < 2 * args.window:
            continue
        first, last = values[: args.window], values[-args.window:]
        half = len(values) // 2
        print(f"  {key}: first {args.window} {sum(first) / len(first):.3f} -> last {args.window} "
              f"{sum(last) / len(last):.3f} (p {permutation_p(first, last):.4f}); halves "
              f"{sum(values[:half]) / half:.3f} -> {sum(values[half:]) / (len(values) - half):.3f} "
              f"(p {permutation_p(values[:half], values[half:]):.4f}); slope {slope(values):+.5f}/step "
              f"(p {slope_p(values):.4f})")


if __name__ == "__main__":
    main()
