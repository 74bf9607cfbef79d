"""Served answers equal evaluated ones: a short tiny-llama run, its eval predictions, and `lmtune serve`'s
/v1/chat/completions for the base model, the adapter, the merged export and the f16 GGUF export.

The server runs in process (FastAPI's TestClient, no training workers); the requests of each model are
sent concurrently, so they are decoded in shared batches.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lmtune.cli import main
from lmtune.model.load import load_tokenizer
from lmtune.runs import run_config
from lmtune.serve.app import create_app
from lmtune.serve.auth import create_key
from lmtune.serve.config import ServeConfig

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
FAST = ["training.num_threads=1", "data.max_validation_examples=8", "data.max_test_examples=16",
        "data.system_prompt=Answer with one word.", "eval.max_new_tokens=6"]
TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n", re.S)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED.is_dir(), reason=f"no shared data at {SHARED}")]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """(run folder, merged export, f16 GGUF export) of one short tiny run."""
    tmp = tmp_path_factory.mktemp("deploy")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        sets = [a for o in (f"output.dir={tmp / 'runs'}", *FAST) for a in ("--set", o)]
        assert main(["train", "configs/tiny.yaml", *sets]) == 0
    (run,) = (tmp / "runs").iterdir()
    assert main(["export", str(run), "--merge", str(tmp / "merged")]) == 0
    assert main(["export", str(run), "--gguf", str(tmp / "gguf" / "tiny.gguf")]) == 0
    return run, tmp / "merged", tmp / "gguf" / "tiny.gguf"


def _messages(prompt: str) -> list[dict]:
    """The chat a chatml generation prompt was rendered from."""
    turns = TURN.findall(prompt)
    assert "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in turns) + "<|im_start|>assistant\n" == prompt
    return [{"role": r, "content": c} for r, c in turns]


def test_served_answers_equal_evaluated_ones_for_base_adapter_merged_and_gguf(deployed, tmp_path):
    run, merged, gguf = deployed
    cfg = run_config(run)
    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 16
    serve_cfg = ServeConfig(data_dir=str(tmp_path / "serve"), start_workers=False,
                            base_models=["tiny-llama", str(merged), str(gguf)])
    app = create_app(serve_cfg)
    store = app.state.store
    key = create_key(store, "p")
    store.execute("INSERT INTO models (id, project, created_at, base, job_id, path) VALUES (?, ?, 0, ?, ?, ?)",
                  ("ft:tiny-llama:p::1", "p", "tiny-llama", "job-1", str(run)))
    chats = [_messages(p["prompt"]) for p in predictions]

    with TestClient(app) as client:
        def ask(model: str, chat: list[dict]) -> str:
            body = {"model": model, "messages": chat, "max_tokens": cfg.eval.max_new_tokens, "temperature": 0}
            resp = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
            assert resp.status_code == 200, resp.text
            return resp.json()["choices"][0]["message"]["content"]

        served = {}
        for model in ("tiny-llama", "ft:tiny-llama:p::1", str(merged), str(gguf)):
            with ThreadPoolExecutor(16) as pool:
                served[model] = list(pool.map(lambda chat, m=model: ask(m, chat), chats))

        # The template at serve time is the one of training, byte for byte.
        tuned = app.state.pool.get("ft:tiny-llama:p::1", "p")
        assert tuned.tokenizer.chat_template == load_tokenizer(cfg.model).chat_template
        assert [tuned.chat_prompt([(m["role"], m["content"]) for m in chat]) for chat in chats] == \
            [p["prompt"] for p in predictions]
        assert app.state.pool.get(str(gguf), "p").tokenizer.chat_template == tuned.tokenizer.chat_template
        assert tuned.batcher is app.state.pool.get("tiny-llama", "p").batcher  # one copy of the base

    fine_tuned = [p["outputs"]["fine-tuned"] for p in predictions]
    base = [p["outputs"]["base zero-shot"] for p in predictions]
    assert fine_tuned != base  # training changed the answers, so the comparison means something
    assert served["tiny-llama"] == base
    assert served["ft:tiny-llama:p::1"] == fine_tuned
    assert served[str(merged)] == fine_tuned
    assert served[str(gguf)] == fine_tuned
    modelfile = (gguf.parent / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./tiny.gguf\n") and 'SYSTEM """Answer with one word."""' in modelfile
