"""Generation throughput of the evaluation path on SmolLM2-135M: batched vs one prompt at a time.

    python bench/generate_speed.py [--prompts 32] [--max-new-tokens 8]

Uses the demo's prompt (TweetEval emotion, chat template), greedy decoding; checks that every batch
size produces the same texts, and prints examples/s per batch size. Results are appended to
bench/results/generate_speed.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()

    from lmtune.config_file import load_config
    from lmtune.data.formats import load_examples
    from lmtune.evaluate.compare import prompt_and_reference
    from lmtune.model.generate import generate
    from lmtune.model.load import load_model

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    examples, _, _ = load_examples(ROOT.parent / "shared" / "data" / "tweeteval" / "emotion" / "test_text.txt")
    model, tok = load_model(cfg.model)
    labels = ["anger", "joy", "optimism", "sadness"]
    prompts = [prompt_and_reference(e, cfg, tok, labels)[0] for e in examples[: args.prompts]]
    generate(model, tok, prompts[:2], max_new_tokens=2, batch_size=2)  # warm-up
    texts, records = None, []
    for bs in args.batch_sizes:
        started = time.perf_counter()
        out = generate(model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=bs)
        seconds = time.perf_counter() - started
        same = texts is None or [g.text for g in out] == texts
        texts = texts or [g.text for g in out]
        record = {"batch_size": bs, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
                  "seconds": seconds, "examples_per_s": len(prompts) / seconds, "same_texts_as_first": same}
        records.append(record)
        print(f"batch {bs:3d}: {record['examples_per_s']:6.2f} examples/s  ({seconds:.1f} s)  same texts: {same}")
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    with open(ROOT / "bench" / "results" / "generate_speed.jsonl", "a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)


if __name__ == "__main__":
    main()
