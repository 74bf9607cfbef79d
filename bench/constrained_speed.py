"""Baseline scoring speed on SmolLM2-135M: generated answers vs label-constrained scores, zero- and 4-shot.

    python bench/constrained_speed.py [--prompts 64] [--threads 1] [--ways constrained]

The demo's prompts (TweetEval emotion test tweets, chat template, eval.max_new_tokens 4, batch 32):
each of the four ways is timed on the same prompts, one after another, so a shared machine slows
them alike and the ratios hold even when the absolute figures do not. Prints examples/s and the
macro-F1 on these prompts; results are appended to bench/results/constrained_speed.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    parser.add_argument("--ways", nargs="+", default=["generated", "constrained"],
                        help="time only the ways whose name starts with one of these")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from lmtune.config_file import load_config
    from lmtune.data.formats import load_examples
    from lmtune.evaluate.compare import score_by_generation, select_shots
    from lmtune.evaluate.constrained import PromptChoice, score_constrained
    from lmtune.model.load import load_model

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    data = ROOT.parent / "shared" / "data" / "tweeteval" / "emotion"
    labels = ["anger", "joy", "optimism", "sadness"]
    test = load_examples(data / "test_text.txt", label_names=labels)[0][: args.prompts]
    shots = select_shots(load_examples(data / "train_text.txt", label_names=labels)[0], 4, cfg.eval.seed)
    model, tok = load_model(cfg.model)
    score_by_generation(model, tok, test[:2], cfg, labels)  # warm-up
    ways = {
        "generated zero-shot": lambda: score_by_generation(model, tok, test, cfg, labels),
        "generated 4-shot": lambda: score_by_generation(model, tok, test, cfg, labels, shots),
        "constrained zero-shot": lambda: score_constrained(model, tok, test, cfg, labels, PromptChoice(None, (), True)),
        "constrained 4-shot": lambda: score_constrained(model, tok, test, cfg, labels,
                                                         PromptChoice(None, tuple(shots), True)),
    }
    records = []
    for name, run in ways.items():
        if not any(name.startswith(w) for w in args.ways):
            continue
        started = time.perf_counter()
        scores = run()
        seconds = time.perf_counter() - started
        record = {"way": name, "prompts": len(test), "threads": torch.get_num_threads(), "seconds": seconds,
                  "examples_per_s": len(test) / seconds, "macro_f1": scores["macro_f1"],
                  "n_unparsed": scores["n_unparsed"], "load_average": os.getloadavg()[0]}
        records.append(record)
        print(f"{name:<22} {record['examples_per_s']:6.2f} examples/s ({seconds:5.1f} s)  macro-F1 "
              f"{scores['macro_f1']:.3f}  unparsed {scores['n_unparsed']:3d}  load average {record['load_average']:.1f}")
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    with open(ROOT / "bench" / "results" / "constrained_speed.jsonl", "a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)


if __name__ == "__main__":
    main()
