"""`lmtune score RUN FILE`: a reward model's score for every response of a file, batched.

    path = score_file("runs/preference/hh-reward-smollm2-...", "answers.jsonl", out="scores.jsonl")

Conversations (chat messages, prompt/completion, alpaca, transcripts) are rendered exactly as the
reward model saw them in training (its template, the answer closed by EOS) and get one `score`;
preference pairs get `chosen_score`, `rejected_score` and `margin`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from lmtune.data.encode import encode_example, encode_preference
from lmtune.data.formats import load_examples
from lmtune.data.records import DataError
from lmtune.model.builtin import ModelError
from lmtune.train.classification import classification_collate
from lmtune.train.methods import method_of
from lmtune.train.objective import pad_id_of
from lmtune.use import load_for_inference


@torch.no_grad()
def sequence_scores(model, encoded: list, pad_id: int, batch_size: int = 8) -> list[float]:
    """The one-output head's score of every encoded sequence, in order (batched by length)."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    scores: dict[int, float] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = classification_collate([encoded[i] for i in idx], pad_id)
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        scores.update(zip(idx, logits[:, 0].float().tolist()))
    return [scores[i] for i in range(len(encoded))]


def score_file(run: str | Path, file: str | Path, out: str | Path | None = None, batch_size: int = 8) -> Path | None:
    """Write one JSON line per example of `file` with the reward model's score(s)."""
    model, tokenizer, cfg = load_for_inference(run)
    if not method_of(cfg).scores_sequences:
        raise ModelError(f"{run} is not a reward-model run (method.task {cfg.method.task})")
    examples, issues, _ = load_examples(str(file), "auto", cfg.data.columns or None)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise DataError(errors)
    sequences, slots = [], []
    for ex in examples:
        if ex.kind == "preference":
            chosen, rejected = encode_preference(ex, tokenizer, cfg.data)
            slots.append((ex, len(sequences), 2))
            sequences += [chosen, rejected]
        elif ex.kind == "chat":
            slots.append((ex, len(sequences), 1))
            sequences.append(encode_example(ex, tokenizer, cfg.data))
        else:
            raise ValueError(f"{ex.file}:{ex.line}: a reward model scores conversations or pairs, not {ex.kind}")
    scores = sequence_scores(model, sequences, pad_id_of(tokenizer), batch_size)
    handle = open(out, "w", encoding="utf-8") if out else sys.stdout
    try:
        for ex, at, n in slots:
            record = {"line": ex.line}
            if n == 2:
                record.update(chosen_score=scores[at], rejected_score=scores[at + 1], margin=scores[at] - scores[at + 1])
            else:
                record["score"] = scores[at]
            handle.write(json.dumps(record) + "\n")
    finally:
        if out:
            handle.close()
    return Path(out) if out else None
