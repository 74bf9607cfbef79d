"""First-token and per-token latency of `lmtune serve`'s streamed chat endpoint, with the openai client.

    python -m bench.peers.serve_latency [--model smollm2-135m-instruct] [--requests 8] [--max-tokens 32]

Starts `python -m lmtune.serve serve` on loopback (its own data folder, a fresh API key, no training
workers), sends one warm-up request (it loads the model), then `--requests` streamed chat
completions one after another at temperature 0. Per request: time to the first chunk (the role-only
chunk the server sends before generating), time to the first content chunk (the first token), and the
mean time between content chunks. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(root: Path, model: str, threads: int | None) -> tuple[subprocess.Popen, str, str]:
    import httpx
    import yaml

    port = _free_port()
    settings = {"data_dir": str(root / "data"), "host": "127.0.0.1", "port": port, "base_models": [model],
                "start_workers": False, "inference_threads": threads}
    (root / "serve.yaml").write_text(yaml.safe_dump(settings))
    log = open(root / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "lmtune.serve", "serve", "--config", str(root / "serve.yaml")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"server did not start: {(root / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    key = subprocess.run([sys.executable, "-m", "lmtune.serve", "keys", "create", "--project", "bench",
                          "--data-dir", settings["data_dir"]], capture_output=True, text=True, check=True)
    return proc, url, key.stdout.strip()


def _one(client: Any, model: str, question: str, max_tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    first_chunk = None
    content_times: list[float] = []
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                            max_tokens=max_tokens, temperature=0, stream=True)
    for chunk in stream:
        now = time.perf_counter()
        first_chunk = first_chunk if first_chunk is not None else now - started
        if chunk.choices and chunk.choices[0].delta.content:
            content_times.append(now)
    gaps = [b - a for a, b in zip(content_times, content_times[1:])]
    return {"first_chunk_s": first_chunk, "first_token_s": content_times[0] - started if content_times else None,
            "content_chunks": len(content_times), "mean_inter_chunk_s": statistics.mean(gaps) if gaps else None}


def measure(model: str, requests: int, max_tokens: int, threads: int | None) -> dict[str, Any]:
    """Start a server, stream `requests` chat completions, stop it; medians over the requests."""
    import openai

    with tempfile.TemporaryDirectory() as tmp:
        proc, url, key = _start(Path(tmp), model, threads)
        try:
            client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=600)
            _one(client, model, QUESTIONS[0], 2)  # loads the model
            runs = [_one(client, model, QUESTIONS[i % len(QUESTIONS)], max_tokens) for i in range(requests)]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)

    def median(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return statistics.median(values) if values else None

    return {"model": model, "requests": requests, "max_tokens": max_tokens, "threads": threads,
            "first_chunk_s": median("first_chunk_s"), "first_token_s": median("first_token_s"),
            "mean_inter_chunk_s": median("mean_inter_chunk_s"),
            "content_chunks": median("content_chunks"), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    print(json.dumps(measure(args.model, args.requests, args.max_tokens, args.threads)))


if __name__ == "__main__":
    main()
