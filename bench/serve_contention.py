"""First-token latency of a warm streamed chat on `lmtune serve`, idle and with a fine-tuning job training beside it.

    python bench/serve_contention.py [--chats 5] [--training-threads N --inference-threads M]

Starts `lmtune serve` on a temporary data directory (SmolLM2-135M-Instruct), warms the model with one
chat, times --chats streamed chats idle, then starts a LoRA job on the same model (160 chat examples)
and, once it has logged training steps, times --chats more. Without thread options the service's
default split applies (ServeConfig: a quarter of the cores for inference, the rest for training);
pass both counts equal to the core count to see PyTorch's old all-cores default. Prints the split
and min / median / max of the first-token latency in each state, and appends them to
bench/results/serve_contention.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "Name one planet of the solar system."}]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_token_seconds(client: httpx.Client) -> float:
    """Seconds from sending a streamed chat to its first chunk with text."""
    started = time.perf_counter()
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 8, "temperature": 0, "stream": True}
    with client.stream("POST", "/chat/completions", json=body) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("data: {") and '"content": "' in line and '"content": ""' not in line:
                return time.perf_counter() - started
    raise RuntimeError("the stream ended without text")


def _summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def _training_file(tmp: Path) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"Tell me fact {i}."},
                          {"role": "assistant", "content": f"Fact {i}: octopuses have three hearts and blue blood."}]}
            for i in range(160)]
    path = tmp / "facts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=5)
    parser.add_argument("--training-threads", type=int, default=None)
    parser.add_argument("--inference-threads", type=int, default=None)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="serve-contention-"))
    data, port = tmp / "data", _port()
    settings = {"data_dir": str(data), "port": port, "base_models": [MODEL], "poll_seconds": 0.5,
                "training_threads": args.training_threads, "inference_threads": args.inference_threads}
    (tmp / "serve.yaml").write_text(yaml.safe_dump({k: v for k, v in settings.items() if v is not None}))
    key = subprocess.run([sys.executable, "-m", "lmtune.serve", "keys", "create", "--project", "bench",
                          "--data-dir", str(data)], capture_output=True, text=True, check=True).stdout.strip()
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - the server writes it until the end
    server = subprocess.Popen([sys.executable, "-m", "lmtune.serve", "serve", "--config", str(tmp / "serve.yaml")],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", headers={"Authorization": f"Bearer {key}"},
                          timeout=600)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.time() > deadline:
                    raise
            time.sleep(0.5)
        split = json.loads((data / "serve.json").read_text())
        _first_token_seconds(client)  # load the model: the figures are for a warm one
        idle = [_first_token_seconds(client) for _ in range(args.chats)]
        with open(_training_file(tmp), "rb") as fh:
            file_id = client.post("/files", data={"purpose": "fine-tune"}, files={"file": ("facts.jsonl", fh)}).json()["id"]
        job = client.post("/fine_tuning/jobs", json={"model": MODEL, "training_file": file_id, "method": {
            "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 8}}}}).json()
        while not [e for e in client.get(f"/fine_tuning/jobs/{job['id']}/events").json()["data"]
                   if e["type"] == "metrics"]:
            if client.get(f"/fine_tuning/jobs/{job['id']}").json()["status"] in ("failed", "cancelled", "succeeded"):
                raise RuntimeError(f"the job ended before the measurement: {(data / 'jobs').glob('*/train.log')}")
            time.sleep(1)
        busy = [_first_token_seconds(client) for _ in range(args.chats)]
        still = client.get(f"/fine_tuning/jobs/{job['id']}").json()["status"]
        client.post(f"/fine_tuning/jobs/{job['id']}/cancel")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)  # the project's converted base model alone is ~0.5 GB
    result = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cores": len(os.sched_getaffinity(0)),
              "training_threads": split["training_threads"], "inference_threads": split["inference_threads"],
              "idle_first_token_s": _summary(idle), "training_first_token_s": _summary(busy),
              "job_status_after": still, "chats": args.chats}
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "serve_contention.jsonl"
    with open(out, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
