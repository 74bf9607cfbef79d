"""Reinforcement fine-tuning on GSM8K through `lmtune serve` and the openai client, with a multi grader.

    python bench/rft_gsm8k.py --train 12 --valid 4 --test 30 --batch-size 1 --eval-interval 4 --max-tokens 48
    python bench/rft_gsm8k.py ... --max-tokens 24 --instruction short

Starts a server (SmolLM2-135M-Instruct as the one base model) in --out, uploads OpenAI reinforcement
files built from ../shared/data/gsm8k ({"messages": [user question], "answer": "<number>"}; by default
the one-calculation problems, as bench/gsm8k_easy.py selects them), runs a `reinforcement` job whose
grader is a multi of a numeric python grader (sandboxed) and a format string_check, prints the
per-step train and validation reward means from the job's events, then the held-out accuracy
(greedy, generated in this process from the base model and the job's run folder) on the first
--test such problems of GSM8K's test split with Wilson 95 % intervals, and a paired McNemar test.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import yaml

from lmtune.graders.grade import GradingContext, grade
from lmtune.graders.spec import parse_grader

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gsm8k"
MODEL = "smollm2-135m-instruct"
INSTRUCTIONS = {
    "steps": "\nSolve it step by step, then give the final answer on the last line as '#### <number>'.",
    "short": "\nReply with only the final answer as '#### <number>', for example '#### 42'.",
}
NUMERIC = '''import re

def grade(sample, item):
    """1 when the final answer (after the last ####, else the last number) equals item.answer."""
    text = sample["output_text"].replace(",", "")
    tail = text.rsplit("####", 1)[1] if "####" in text else text
    numbers = re.findall(r"-?\\d+(?:\\.\\d+)?", tail)
    if not numbers:
        return 0.0
    pick = numbers[0] if "####" in text else numbers[-1]
    return float(float(pick) == float(item["answer"]))
'''
GRADER = {"type": "multi", "name": "gsm8k", "calculate_output": "0.9 * correct + 0.1 * format",
          "graders": {"correct": {"type": "python", "name": "correct", "source": NUMERIC},
                      "format": {"type": "string_check", "name": "format", "input": "{{ sample.output_text }}",
                                 "reference": "####", "operation": "like"}}}


def rows(split: str, start: int, n: int, max_steps: int, instruction: str) -> list[dict]:
    """Reinforcement records of GSM8K problems whose solution has at most `max_steps` calculations."""
    lines = (DATA / f"{split}.jsonl").read_text().splitlines()
    easy = [json.loads(line) for line in lines if line.count("<<") <= max_steps][start:start + n]
    out = []
    for rec in easy:
        answer = rec["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        out.append({"messages": [{"role": "user", "content": rec["question"] + instruction}], "answer": answer})
    return out


def jsonl(records: list[dict]) -> io.BytesIO:
    return io.BytesIO("".join(json.dumps(r) + "\n" for r in records).encode())


def wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(0, min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def accuracy(target: str, test: list[dict], max_tokens: int) -> list[float]:
    """Greedy answers of a model name or run folder on `test` (generated here, KV cache, batches of 20), graded."""
    from lmtune.data.records import Message
    from lmtune.data.templates import generation_prompt, resolve_template
    from lmtune.model.generate import generate
    from lmtune.use import load_for_inference

    model, tokenizer, cfg = load_for_inference(target)
    template = resolve_template(cfg.data.template, tokenizer)
    prompts = [generation_prompt([Message(m["role"], m["content"]) for m in rec["messages"]], template, tokenizer)
               for rec in test]
    answers = [g.text for g in generate(model.eval(), tokenizer, prompts, max_new_tokens=max_tokens, batch_size=20)]
    correct = parse_grader(GRADER["graders"]["correct"])
    return [o.reward for o in grade(correct, answers, test, GradingContext())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=120)
    parser.add_argument("--valid", type=int, default=8)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-interval", type=int, default=10)
    parser.add_argument("--compute-multiplier", type=float, default=1.0, help="completions per prompt: 4 x this")
    parser.add_argument("--lr-multiplier", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=256)
    # One thread: on a loaded machine two OpenMP threads wait on each other at every op (10x slower).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--instruction", choices=list(INSTRUCTIONS), default="steps",
                        help="what the prompt asks for after the question")
    parser.add_argument("--max-steps", type=int, default=1, help="GSM8K problems with at most this many calculations")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", default="/tmp/rft-gsm8k")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)  # the held-out answers are generated in this process
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    settings = {"data_dir": str(root / "data"), "host": "127.0.0.1", "port": args.port, "base_models": [MODEL],
                "training_threads": args.threads, "inference_threads": args.threads, "eval_at_end": False,
                "reinforcement_max_new_tokens": args.max_tokens}
    (root / "serve.yaml").write_text(yaml.safe_dump(settings))
    log = open(root / "server.log", "ab")  # noqa: SIM115 - the server writes it while it runs
    server = subprocess.Popen([sys.executable, "-m", "lmtune.serve", "serve", "--config", str(root / "serve.yaml")],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{args.port}"
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        key = subprocess.run([sys.executable, "-m", "lmtune.serve", "keys", "create", "--project", "bench",
                              "--data-dir", str(root / "data")], capture_output=True, text=True, check=True).stdout.strip()
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, timeout=1800, max_retries=0)
        instruction = INSTRUCTIONS[args.instruction]
        train = rows("train", 0, args.train, args.max_steps, instruction)
        valid = rows("train", args.train, args.valid, args.max_steps, instruction)
        test = rows("test", 0, args.test, args.max_steps, instruction)
        train_id = client.files.create(file=("gsm8k-train.jsonl", jsonl(train)), purpose="fine-tune").id
        valid_id = client.files.create(file=("gsm8k-valid.jsonl", jsonl(valid)), purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(model=MODEL, training_file=train_id, validation_file=valid_id, seed=0,
                                             method={"type": "reinforcement", "reinforcement": {"grader": GRADER,
                                                     "hyperparameters": {"n_epochs": 1, "batch_size": args.batch_size,
                                                                         "learning_rate_multiplier": args.lr_multiplier,
                                                                         "eval_interval": args.eval_interval,
                                                                         "compute_multiplier": args.compute_multiplier,
                                                                         "eval_samples": args.valid}}})
        started = time.time()
        while job.status not in ("succeeded", "failed", "cancelled"):
            time.sleep(10)
            job = client.fine_tuning.jobs.retrieve(job.id)
        print(f"job {job.id} {job.status} in {time.time() - started:.0f} s {job.error or ''}", flush=True)
        events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
        print("step  train_reward_mean  valid_reward_mean")
        for e in sorted((e for e in events if e.type == "metrics"), key=lambda e: e.data["step"]):
            print(f"{e.data['step']:>4}  {e.data.get('train_reward_mean', float('nan')):>17.3f}  "
                  f"{e.data.get('valid_reward_mean', float('nan')):>17.3f}")
        if job.status != "succeeded":
            return
        started = time.time()
        before = accuracy(MODEL, test, args.max_tokens)
        (run_dir,) = (root / "data" / "runs").glob(f"{job.id}-*")
        after = accuracy(str(run_dir), test, args.max_tokens)
        print(f"held-out answers generated and graded in {time.time() - started:.0f} s", flush=True)
        n = len(test)
        for name, scores in (("base", before), ("fine-tuned", after)):
            k = int(sum(scores))
            low, high = wilson(k, n)
            print(f"{name:>10}: {k}/{n} = {k / n:.3f} (95 % Wilson {low:.3f}-{high:.3f})")
        b = sum(1 for x, y in zip(before, after) if x > y)
        c = sum(1 for x, y in zip(before, after) if y > x)
        print(f"discordant: base only {b}, fine-tuned only {c}; exact McNemar p = {mcnemar_exact(b, c):.3f}")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
