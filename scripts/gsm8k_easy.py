"""Write the GSM8K subset the GRPO run trains on: problems whose reference solution has at most one
calculation step (one `<<a op b=c>>` annotation), the easiest level of GSM8K. SmolLM2-135M-Instruct
still solves only about 1 % of it (docs/results.md), too few for a group of samples to disagree.

    python scripts/gsm8k_easy.py                       # -> runs/data/gsm8k-easy/{train,test}.jsonl
    python scripts/gsm8k_easy.py --max-steps 2 --out DIR

The selection is deterministic (file order, no sampling); the rows are copied unchanged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"


def easy_rows(path: Path, max_steps: int) -> list[dict]:
    """Rows of a GSM8K JSONL file whose answer has at most `max_steps` calculator annotations."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["answer"].count("<<") <= max_steps:
                rows.append(row)
    return rows


def main() -> None:
    """Write the train and test subsets and print their sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="folder with GSM8K train.jsonl and test.jsonl")
    parser.add_argument("--out", type=Path, default=Path("runs/data/gsm8k-easy"))
    parser.add_argument("--max-steps", type=int, default=1, help="most calculation steps in the reference")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = easy_rows(args.source / f"{split}.jsonl", args.max_steps)
        with (args.out / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        print(f"{split}: {len(rows)} problems -> {args.out / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
