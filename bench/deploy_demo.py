"""Deploy what was evaluated, on a trained demo run (SmolLM2-135M + LoRA, TweetEval emotion).

    python bench/deploy_demo.py RUN [--limit 200] [--q8-limit 100]

RUN is a finished `lmtune train configs/demo.yaml` run (its predictions.jsonl holds the eval answers).
Exports it merged, as f16 GGUF and as q8_0 GGUF, then prints:
- the largest |logit| difference between the merged model and the f16 GGUF read back by transformers
  (`gguf_file=`) on the first 16 test prompts;
- the share of greedy answers through `/v1/chat/completions` (an in-process `lmtune serve`, concurrent
  requests) equal to the eval's answers: base model vs "base zero-shot", and adapter, merged and f16
  GGUF vs "fine-tuned", on the first --limit test prompts; q8_0 GGUF vs "fine-tuned" on --q8-limit;
- the share of the adapter's served answers that end with EOS within the eval's max_new_tokens.
Results are appended to bench/results/deploy_demo.jsonl.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parents[1]
TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n", re.S)
FT = "ft:demo:bench::1"


def _messages(prompt: str) -> list[dict]:
    turns = TURN.findall(prompt)
    if "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in turns) + "<|im_start|>assistant\n" != prompt:
        raise ValueError(f"not a chatml generation prompt: {prompt[:80]!r}")
    return [{"role": r, "content": c} for r, c in turns]


def logit_gap(merged: Path, gguf: Path, prompts: list[str]) -> float:
    """Max |logit| difference between the merged model and the GGUF file read back by transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(merged))
    gap = 0.0
    for prompt in prompts:
        ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            gap = max(gap, (a(ids).logits - b(ids).logits).abs().max().item())
    return gap


def rounding_gap(merged: Path, prompts: list[str]) -> float:
    """Max |logit| difference between the merged model and itself with every weight rounded to f16:
    what f16 storage alone costs, whatever the file format."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    b = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(merged))
    gap = 0.0
    with torch.no_grad():
        for p in b.parameters():
            p.copy_(p.half().float())
        for prompt in prompts:
            ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
            gap = max(gap, (a(ids).logits - b(ids).logits).abs().max().item())
    return gap


def served(run: Path, models: dict[str, list[list[dict]]], max_tokens: int, base_models: list[str],
           data_dir: Path) -> dict[str, list[dict]]:
    """Greedy choices from /v1/chat/completions for every (model, chat), requests sent 32 at a time."""
    from fastapi.testclient import TestClient

    from lmtune.serve.app import create_app
    from lmtune.serve.auth import create_key
    from lmtune.serve.config import ServeConfig

    app = create_app(ServeConfig(data_dir=str(data_dir), start_workers=False, base_models=base_models))
    key = create_key(app.state.store, "bench")
    app.state.store.execute("INSERT INTO models (id, project, created_at, base, job_id, path) VALUES (?, ?, 0, ?, ?, ?)",
                            (FT, "bench", base_models[0], "job-1", str(run)))
    out = {}
    with TestClient(app) as client:
        for model, chats in models.items():
            def ask(chat: list[dict], model: str = model) -> dict:
                body = {"model": model, "messages": chat, "max_tokens": max_tokens, "temperature": 0}
                resp = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
                resp.raise_for_status()
                return resp.json()["choices"][0]
            started = time.perf_counter()
            with ThreadPoolExecutor(32) as pool:
                out[model] = list(pool.map(ask, chats))
            print(f"  {model}: {len(chats)} answers in {time.perf_counter() - started:.0f} s", flush=True)
    return out


def base_answers(cfg, predictions: list[dict]) -> list[str]:
    """The base model's greedy answers as `lmtune eval` generates them: from the run when it generated
    its zero-shot baseline, else generated here through the same function on the same prompts."""
    if all("base zero-shot" in p["outputs"] for p in predictions):
        return [p["outputs"]["base zero-shot"] for p in predictions]
    from lmtune.model.generate import generate
    from lmtune.model.load import load_model

    model, tokenizer = load_model(cfg.model)
    started = time.perf_counter()
    answers = generate(model, tokenizer, [p["prompt"] for p in predictions], cfg.eval.max_new_tokens,
                       batch_size=cfg.eval.batch_size, desc="base model, as lmtune eval generates")
    print(f"base answers generated in {time.perf_counter() - started:.0f} s (the run scored its baselines "
          "constrained only)", flush=True)
    return [a.text for a in answers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--q8-limit", type=int, default=100)
    args = parser.parse_args()

    from lmtune.runs import run_config
    from lmtune.use import export_gguf, export_run

    run = Path(args.run).resolve()
    cfg = run_config(run)
    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    chats = [_messages(p["prompt"]) for p in predictions]
    tuned = [p["outputs"]["fine-tuned"] for p in predictions]
    base = base_answers(cfg, predictions)
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "run": run.name, "test_prompts": len(predictions)}
    with TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        merged = export_run(run, merge_to=str(tmp / "merged"))
        f16, _ = export_gguf(run, tmp / "f16" / "demo.gguf", "f16")
        q8, _ = export_gguf(run, tmp / "q8" / "demo.gguf", "q8_0")
        result["export_s"] = time.perf_counter() - started
        result["gguf_mib"] = {"f16": f16.stat().st_size / 2**20, "q8_0": q8.stat().st_size / 2**20}
        result["f16_max_abs_logit_diff"] = logit_gap(merged, f16, [p["prompt"] for p in predictions[:16]])
        print(f"f16 GGUF vs merged, 16 prompts: max |logit diff| {result['f16_max_abs_logit_diff']:.2e}", flush=True)
        result["f16_rounding_max_abs_logit_diff"] = rounding_gap(merged, [p["prompt"] for p in predictions[:16]])
        print(f"merged vs its own weights rounded to f16: max |logit diff| "
              f"{result['f16_rounding_max_abs_logit_diff']:.2e}", flush=True)
        n, n8 = args.limit, args.q8_limit
        answers = served(run, {cfg.model.name: chats[:n], FT: chats[:n], str(merged): chats[:n], str(f16): chats[:n],
                               str(q8): chats[:n8]}, cfg.eval.max_new_tokens,
                         [cfg.model.name, str(merged), str(f16), str(q8)], tmp / "serve")

    def share(model: str, expected: list[str]) -> float:
        got = [c["message"]["content"] for c in answers[model]]
        return sum(g == e for g, e in zip(got, expected)) / len(got)

    result["equal_to_eval"] = {"base": share(cfg.model.name, base), "adapter": share(FT, tuned),
                               "merged": share(str(merged), tuned), "gguf_f16": share(str(f16), tuned),
                               "gguf_q8_0": share(str(q8), tuned)}
    result["compared"] = {"parity": n, "q8_0": n8}
    result["eos_share"] = sum(c["finish_reason"] == "stop" for c in answers[FT]) / len(answers[FT])
    result["max_tokens"] = cfg.eval.max_new_tokens
    for name, value in result["equal_to_eval"].items():
        print(f"{name}: {value:.1%} of {n8 if name == 'gguf_q8_0' else n} served greedy answers equal to lmtune eval's")
    print(f"fine-tuned answers ending with EOS within {cfg.eval.max_new_tokens} tokens: {result['eos_share']:.1%}")
    with open(ROOT / "bench" / "results" / "deploy_demo.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
