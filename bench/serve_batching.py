"""`lmtune serve` on SmolLM2-135M: 16 streamed chats at once vs one after another, and 4 adapters vs 1 in memory.

    python bench/serve_batching.py [--chats 16] [--max-tokens 48] [--skip-memory] [--skip-throughput]

Throughput: a real server (uvicorn in this process, no training workers) gets the same 16 demo-style
chats (TweetEval emotion tweets, the demo's instruction) as streamed /v1/chat/completions requests,
first one after another, then all at once; completion tokens per second of wall time for each, and a
check that the greedy texts are the same both ways.
Memory: 4 LoRA adapters of the demo's shape (r 16, all linear layers, random weights) registered as
fine-tuned models and loaded through the server's model pool; parameter bytes and process RSS with
one adapter loaded and with four. Results are appended to bench/results/serve_batching.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parents[1]
BASE = "smollm2-135m-instruct"


def _chats(n: int) -> list[list[dict]]:
    from lmtune.config_file import load_config

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    tweets = (ROOT.parent / "shared" / "data" / "tweeteval" / "emotion" / "test_text.txt").read_text().splitlines()
    labels = "anger, joy, optimism, sadness"
    return [[{"role": "system", "content": cfg.data.system_prompt},
             {"role": "user", "content": cfg.data.instruction.format(labels=labels, text=t) + " Explain why."}]
            for t in tweets[:n]]


def _serve(data_dir: Path):
    import uvicorn

    from lmtune.serve.app import create_app
    from lmtune.serve.auth import create_key
    from lmtune.serve.config import ServeConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(ServeConfig(data_dir=str(data_dir), start_workers=False, base_models=[BASE], port=port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return app, server, f"http://127.0.0.1:{port}/v1", create_key(app.state.store, "bench")


def _stream(url: str, key: str, chat: list[dict], max_tokens: int) -> tuple[str, int]:
    import httpx

    body = {"model": BASE, "messages": chat, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    text, tokens = "", 0
    with httpx.stream("POST", f"{url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=600) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            for choice in chunk["choices"]:
                text += choice["delta"].get("content") or ""
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return text, tokens


def throughput(chats: list[list[dict]], max_tokens: int) -> dict:
    """Tokens/s for the chats streamed one after another, then all at once, through a real server."""
    with TemporaryDirectory() as tmp:
        app, server, url, key = _serve(Path(tmp))
        _stream(url, key, chats[0], 4)  # loads the model
        started = time.perf_counter()
        one_by_one = [_stream(url, key, chat, max_tokens) for chat in chats]
        sequential_s = time.perf_counter() - started
        started = time.perf_counter()
        with ThreadPoolExecutor(len(chats)) as pool:
            together = list(pool.map(lambda chat: _stream(url, key, chat, max_tokens), chats))
        concurrent_s = time.perf_counter() - started
        batches = app.state.pool.bases[BASE].batcher.batches
        server.should_exit = True
    tokens = sum(n for _, n in one_by_one)
    return {"chats": len(chats), "max_tokens": max_tokens, "completion_tokens": tokens,
            "sequential_tokens_per_s": tokens / sequential_s, "concurrent_tokens_per_s": tokens / concurrent_s,
            "speedup": sequential_s / concurrent_s, "same_texts": [t for t, _ in one_by_one] == [t for t, _ in together],
            "batches_total": batches}


def memory(n_adapters: int = 4) -> dict:
    """Parameter bytes and RSS growth of the server's model pool with one fine-tuned adapter loaded, then
    n_adapters; the adapters are made here, the pool is measured in a fresh process."""
    import subprocess
    import sys

    import torch

    from lmtune.config_file import dump_config, load_config
    from lmtune.model.adapters import apply_peft
    from lmtune.model.export import save_model
    from lmtune.model.load import load_model

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    with TemporaryDirectory() as tmp:
        for i in range(n_adapters):
            model, tokenizer = load_model(cfg.model)
            torch.manual_seed(i)
            peft = apply_peft(model, cfg.method, cfg.lora)
            save_model(peft, tokenizer, Path(tmp) / f"run{i}" / "final", base_cfg=cfg.model)
            (Path(tmp) / f"run{i}" / "config.yaml").write_text(dump_config(cfg))
        out = subprocess.run([sys.executable, __file__, "--pool-memory", tmp, "--adapters", str(n_adapters)],
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def pool_memory(folder: Path, n_adapters: int) -> dict:
    """Load the runs under `folder` as fine-tuned models through ModelPool.get; bytes after 1 and after all."""
    import gc

    import psutil

    from lmtune.serve.config import ServeConfig
    from lmtune.serve.inference import ModelPool
    from lmtune.serve.store import Store

    serve_cfg = ServeConfig(data_dir=str(folder / "serve"), adapter_cache_size=n_adapters, base_models=[BASE])
    serve_cfg.root.mkdir(parents=True)
    store = Store(serve_cfg.database)
    for i in range(n_adapters):
        store.execute("INSERT INTO models (id, project, created_at, base, job_id, path) VALUES (?, 'b', 0, ?, ?, ?)",
                      (f"ft:{BASE}:b::{i}", BASE, f"job-{i}", str(folder / f"run{i}")))
    pool = ModelPool(serve_cfg, store)
    process = psutil.Process(os.getpid())

    def measure() -> dict:
        gc.collect()
        storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes()
                    for batcher, _ in pool.copies.values() for p in batcher.model.parameters()}
        return {"param_bytes": sum(storages.values()), "rss_bytes": process.memory_info().rss - rss_before}

    import torch  # noqa: F401  (imported before the baseline, so library pages are not counted as model memory)
    import transformers  # noqa: F401

    def serve(i: int) -> None:
        loaded = pool.get(f"ft:{BASE}:b::{i}", "b")  # and answer once, so every weight page is really in memory
        loaded.complete([loaded.chat_prompt([("user", "Hello")])], max_new_tokens=2, temperature=0.0, top_p=1.0,
                        stop=[], seed=0)

    rss_before = process.memory_info().rss
    serve(0)
    one = measure()
    for i in range(1, n_adapters):
        serve(i)
    many = measure()
    assert len(pool.copies) == 1, "the adapters did not share one base"
    return {"adapters": n_adapters, "one": one, "many": many, "param_ratio": many["param_bytes"] / one["param_bytes"],
            "rss_ratio": many["rss_bytes"] / one["rss_bytes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--pool-memory", help=argparse.SUPPRESS)  # the fresh process of memory()
    args = parser.parse_args()
    if args.pool_memory:
        print(json.dumps(pool_memory(Path(args.pool_memory), args.adapters)))
        return

    import torch

    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "torch_threads": torch.get_num_threads()}
    if not args.skip_memory:
        result["memory"] = memory(args.adapters)
        mem = result["memory"]
        print(f"memory, 1 vs {mem['adapters']} adapters: parameters {mem['one']['param_bytes'] / 2**20:.1f} -> "
              f"{mem['many']['param_bytes'] / 2**20:.1f} MiB ({mem['param_ratio']:.3f}x); process RSS growth "
              f"{mem['one']['rss_bytes'] / 2**20:.1f} -> {mem['many']['rss_bytes'] / 2**20:.1f} MiB ({mem['rss_ratio']:.3f}x)")
    if not args.skip_throughput:
        result["throughput"] = tp = throughput(_chats(args.chats), args.max_tokens)
        print(f"{tp['chats']} streamed chats, {tp['completion_tokens']} tokens: one after another "
              f"{tp['sequential_tokens_per_s']:.1f} tokens/s, at once {tp['concurrent_tokens_per_s']:.1f} tokens/s "
              f"({tp['speedup']:.2f}x); same texts: {tp['same_texts']}")
    out = ROOT / "bench" / "results" / "serve_batching.jsonl"
    with open(out, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
