"""Driver: the same recipe on every system, in alternation, each run in its own process; then the report.

    python -m bench.peers                              # full run: 8 steps of 4 x 4 GSM8K chats, 2 rounds
    python -m bench.peers --smoke                      # 2 steps x 2 chats, 1 thread, tiny eval: harness check
    python -m bench.peers --device cuda --model-config llama-1b --batch-size 16 --grad-accum 1 --steps 30
    python -m bench.peers --systems lmtune trl-best --rounds 3
    python -m bench.peers --rounds 3 --single-round trl-default     # the slow system once, the others 3 times

Writes bench/results/peers.json and peers.md and prints the table; the names get -<model-config>, -cuda
and -smoke added for those options (peers-smoke.*, peers-llama-1b-cuda.*), or --name's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.peers.common import (DEFAULT_SYSTEMS, GSM8K, LMTUNE_SYSTEMS, MODEL_SHAPES, ROOT, SYSTEMS, Spec, gsm8k_chats,
                                prompt_completion_ids, write_chats)
from bench.peers.machine import FLOPS_FORMULA, describe, matmul_peak, nonembedding_parameters
from bench.peers.report import check_targets, markdown, summarize

RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny configuration; results named *-smoke")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="lmtune model name (built-in or HF folder)")
    parser.add_argument("--model-config", choices=sorted(MODEL_SHAPES), help="random-weight Llama of this shape")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: PyTorch's)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default 8; smoke 2)")
    parser.add_argument("--batch-size", type=int, help="examples per micro-batch (default 4; smoke 2)")
    parser.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (default 4; smoke 1)")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--eval-examples", type=int, help="GSM8K test chats for the validation loss (default 64)")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(DEFAULT_SYSTEMS),
                        help=f"default: {' '.join(DEFAULT_SYSTEMS)} (the bf16-weight variants are opt-in)")
    parser.add_argument("--single-round", nargs="+", choices=SYSTEMS, default=[],
                        help="systems run in the first round only (trl-default: emulated bf16 makes it ~15x slower)")
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (adapters, logs)")
    parser.add_argument("--name", help="results file stem (default: peers, with -<model-config>, -cuda, -smoke)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help=f"where the JSON and Markdown go "
                        f"(default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--gsm8k", type=Path, default=GSM8K, help="folder with GSM8K's train.jsonl and test.jsonl")
    parser.add_argument("--peak-seconds", type=float, default=3.0, help="length of each matmul peak probe")
    parser.add_argument("--peak-size", type=int, help="matrix size of the peak probes (default: by device and dtype)")
    args = parser.parse_args(argv)
    small = args.smoke
    args.steps = args.steps or (2 if small else 8)
    # 4 x 4: without activation checkpointing a fp32 SmolLM2 keeps ~4 MB per token, so one padded
    # micro-batch of 16 GSM8K chats (~6,500 tokens) would not fit in 24 GB.
    args.batch_size = args.batch_size or (2 if small else 4)
    args.grad_accum = args.grad_accum or (1 if small else 4)
    args.threads = args.threads or (1 if small else None)
    args.eval_examples = args.eval_examples or (8 if small else 64)
    return args


def model_source(args: argparse.Namespace) -> tuple[str, str]:
    """(display name, HF folder) of the base model; a --model-config model is built once and cached."""
    from lmtune.config import ModelConfig
    from lmtune.model.load import load_model, resolve_source

    if args.model_config is None:
        return args.model, resolve_source(ModelConfig(name=args.model))
    folder = Path("~/.cache/lmtune/bench").expanduser() / args.model_config
    if not (folder / "config.json").exists():
        # --model's tokenizer (SmolLM2's by default) gives real token statistics; the weights are
        # random (seed 0) in fp32. A folder with config.json and tokenizer files is enough for --model.
        shape = MODEL_SHAPES[args.model_config]
        model, tokenizer = load_model(ModelConfig(name=args.model, from_config=shape))
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return f"{args.model_config} (random weights)", str(folder)


def subprocess_env(threads: int | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_logged(cmd: list[str], log: Path, env: dict[str, str]) -> str:
    """Run a command from the repository root, stderr to `log`; returns stdout, raises with the log's tail."""
    with open(log, "w") as err:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return proc.stdout


def generation_speed(args: argparse.Namespace, env: dict[str, str], log: Path) -> dict[str, Any]:
    """bench/generate_speed.py in a subprocess; its printed lines parsed (a smoke run leaves its log as it was)."""
    sizes = ["1", "4"] if args.smoke else ["1", "8", "32"]
    cmd = [sys.executable, "bench/generate_speed.py", "--prompts", "4" if args.smoke else "32",
           "--max-new-tokens", "4" if args.smoke else "8", "--batch-sizes", *sizes]
    jsonl = RESULTS / "generate_speed.jsonl"
    before = jsonl.read_bytes() if jsonl.exists() else None
    out = run_logged(cmd, log, env)
    if args.smoke:  # smoke figures are not results: keep them out of the shared log
        jsonl.write_bytes(before) if before is not None else jsonl.unlink(missing_ok=True)
    pattern = re.compile(r"batch\s+(\d+):\s+([\d.]+) examples/s\s+\(([\d.]+) s\)\s+same texts: (\w+)")
    batches = [{"batch_size": int(b), "examples_per_s": float(e), "seconds": float(s),
                "same_texts_as_first": t == "True"} for b, e, s, t in pattern.findall(out)]
    return {"command": shlex.join(cmd[1:]), "batches": batches}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M")
    work = Path(tempfile.mkdtemp(prefix="lmtune-peers-"))
    env = subprocess_env(args.threads)
    import torch
    from transformers import AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    name, source = model_source(args)
    n_train = args.steps * args.batch_size * args.grad_accum
    train_chats = gsm8k_chats("train", 0, n_train, args.gsm8k)
    train_file = write_chats(train_chats, work / "train.jsonl")
    eval_file = write_chats(gsm8k_chats("test", 0, args.eval_examples, args.gsm8k), work / "eval.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(source)
    longest = max(sum(map(len, prompt_completion_ids(tokenizer, c))) for c in train_chats)
    if longest > args.max_length:
        print(f"warning: the longest example has {longest} tokens > --max-length {args.max_length}: truncated "
              "(except by trl-best's padding-free layout on CUDA, which TRL leaves untruncated)", flush=True)
    base = Spec(source=source, train_file=str(train_file), eval_file=str(eval_file), steps=args.steps,
                batch_size=args.batch_size, grad_accum=args.grad_accum, learning_rate=args.learning_rate,
                max_length=args.max_length, device=args.device, threads=args.threads)

    machine = describe(args.device)
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch threads {machine['torch_threads']}; "
          f"work folder {work}", flush=True)
    def probe_peaks() -> dict[str, float]:
        found = {dtype: matmul_peak(dtype, args.device, args.peak_seconds, args.peak_size)["gflops"] for dtype in ("float32", "bfloat16")}
        print(f"matmul peak: fp32 {found['float32']:.1f} GFLOP/s, bf16 {found['bfloat16']:.1f} GFLOP/s", flush=True)
        return found

    # Probed before and after the runs, the best of both kept: a probe that falls into a slow spell of
    # a shared machine understates the peak (678 against 1,879-1,921 bf16 GFLOP/s on the same Xeon).
    peak_probes = [probe_peaks()]
    params = nonembedding_parameters(source)

    runs: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        for system in args.systems:  # alternation: machine drift hits every system alike
            if round_ > 0 and system in args.single_round:
                continue
            out = work / f"{system}-r{round_}"
            out.mkdir()
            spec = Spec(**{**base.__dict__, "out_dir": str(out)})
            spec.save(out / "spec.json")
            run_logged([sys.executable, "-m", "bench.peers.worker", "train", system, str(out / "spec.json")],
                       out / "train.log", env)
            record = {**json.loads((out / "result.json").read_text()), "round": round_}
            runs.append(record)
            gpu = f"  peak GPU {record['peak_gpu_mb']:6.0f} MB" if "peak_gpu_mb" in record else ""
            print(f"round {round_} {system:12s} {record['supervised_tokens_per_s']:8.1f} sup tok/s "
                  f"{record['tokens_per_s']:8.1f} tok/s  peak RSS {record['peak_rss_mb']:6.0f} MB{gpu}  "
                  f"loss {record['train_loss']:.4f}  ({record['wall_seconds']:.0f} s)", flush=True)

    def evaluate(adapter: str) -> dict[str, Any]:
        out = run_logged([sys.executable, "-m", "bench.peers.worker", "eval", str(work / "eval-spec.json"), adapter],
                         work / f"eval-{Path(adapter).parent.name or 'base'}.log", env)
        return json.loads(out.strip().splitlines()[-1])

    base.save(work / "eval-spec.json")
    base_eval = evaluate("-")["eval_loss"]
    evals = {s: evaluate(str(work / f"{s}-r0" / "adapter")) for s in args.systems}
    print(f"validation loss: base {base_eval:.4f}, " + ", ".join(f"{s} {e['eval_loss']:.4f}" for s, e in evals.items()),
          flush=True)

    peak_probes.append(probe_peaks())
    peaks = {dtype: max(probe[dtype] for probe in peak_probes) for dtype in peak_probes[0]}
    systems = summarize(runs, evals, 6 * params["nonembedding"], peaks)
    result: dict[str, Any] = {
        "smoke": args.smoke, "started": started,
        "command": shlex.join(["python", "-m", "bench.peers", *(argv or sys.argv[1:])]),
        "machine": machine, "peaks": peaks, "peak_probes": peak_probes, "model": name, "parameters": params, "flops_formula": FLOPS_FORMULA,
        "spec": {k: v for k, v in base.__dict__.items() if k not in ("out_dir", "train_file", "eval_file", "source")},
        "rounds": args.rounds, "train_examples": n_train, "eval_examples": args.eval_examples,
        "longest_example": longest, "base_eval_loss": base_eval, "systems": systems,
        "targets": {name: check_targets(systems, name) for name in LMTUNE_SYSTEMS if name in args.systems},
        "runs": runs,
    }
    if not args.skip_generate:
        result["generation"] = generation_speed(args, env, work / "generate.log")
    if not args.skip_serve:
        from bench.peers.serve_latency import measure

        model = args.model if args.model_config is None else "smollm2-135m-instruct"
        result["serve"] = measure(model, 2 if args.smoke else 8, 8 if args.smoke else 32, args.threads)
    stem = args.name or "-".join(["peers", *([args.model_config] if args.model_config else []),
                                  *(["cuda"] if args.device == "cuda" else []), *(["smoke"] if args.smoke else [])])
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = markdown(result)
    (args.results_dir / f"{stem}.md").write_text(text)
    print(text)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
