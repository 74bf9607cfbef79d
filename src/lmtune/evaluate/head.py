"""Classification heads at inference: batched class probabilities, test scoring and `lmtune predict`.

    probs = class_probabilities(model, encoded, pad_id, batch_size=32)     # [n, k] numpy, input order
    scores = score_by_head(model, tokenizer, examples, encoded, label_names, cfg)
    path, n = predict_file("runs/emotion-...", "tweets.txt", out="predictions.jsonl")

Batches are formed from inputs of similar length (less padding) and the rows are put back in input
order, so probabilities never depend on which other inputs shared a batch beyond float rounding.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lmtune.config import RunConfig
from lmtune.data.encode import encode_classification
from lmtune.data.formats import load_examples
from lmtune.data.records import DataError, Example
from lmtune.evaluate.compare import label_scores
from lmtune.model.builtin import ModelError
from lmtune.train.classification import classification_collate, head_logits
from lmtune.train.methods import method_of
from lmtune.train.objective import pad_id_of
from lmtune.use import load_for_inference


@torch.no_grad()
def class_probabilities(model, encoded: list, pad_id: int, batch_size: int = 32, desc: str | None = None) -> np.ndarray:
    """Softmax over the head's outputs for every encoded input, [n, n_classes], in input order (a
    progress bar named `desc` when given)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    rows: dict[int, np.ndarray] = {}
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=desc is None, dynamic_ncols=True):
        idx = order[start : start + batch_size]
        batch = classification_collate([encoded[i] for i in idx], pad_id)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        probs = torch.softmax(head_logits(model, batch), dim=-1).cpu().numpy()
        rows.update(zip(idx, probs))
    if was_training:
        model.train()
    return np.stack([rows[i] for i in range(len(encoded))]) if encoded else np.zeros((0, 0))


def score_by_head(model, tokenizer, examples: list[Example], encoded: list, label_names: list[str],
                  cfg: RunConfig, desc: str | None = None) -> dict[str, Any]:
    """The head's argmax on every test example, scored like generated answers (same metrics and intervals)."""
    started = time.perf_counter()
    probs = class_probabilities(model, encoded, pad_id_of(tokenizer), cfg.eval.batch_size, desc)
    seconds = time.perf_counter() - started
    predicted = [label_names[i] for i in probs.argmax(-1)]
    references = [e.label for e in examples]
    scores: dict[str, Any] = {"n": len(examples), "seconds": seconds, "examples_per_s": len(examples) / max(seconds, 1e-9)}
    scores.update(label_scores(predicted, references, label_names, cfg))
    scores["predictions"] = [
        {"prompt": e.text, "reference": e.label, "output": p, "parsed": p,
         "probabilities": {n: round(float(x), 6) for n, x in zip(label_names, row)}}
        for e, p, row in zip(examples, predicted, probs)
    ]
    return scores


def label_names_of(model) -> list[str]:
    """The class names saved in the model's config (id2label), in index order."""
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label[i]) for i in sorted(int(k) for k in id2label)]


def predict_file(run: str | Path, file: str | Path, out: str | Path | None = None,
                 batch_size: int = 32) -> tuple[Path | None, int]:
    """Write one JSON line per input of `file` (its text, the predicted label and every class probability);
    return (the output file or None for stdout, the number of predictions)."""
    model, tokenizer, cfg = load_for_inference(run)
    names = label_names_of(model)
    if method_of(cfg).evaluation != "head" or not names:
        raise ModelError(f"{run} is not a classification run (method.task {cfg.method.task}); "
                         "use `lmtune generate` for language models")
    examples, issues, _ = load_examples(str(file), "auto", cfg.data.columns or None, names)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise DataError(errors)
    # Labels in the file are allowed (and ignored): predicting a labelled test file is common.
    inputs = [Example("text", text=e.text, file=e.file, line=e.line) for e in examples]
    bad = [e for e in inputs if e.text is None]
    if bad:
        raise ValueError(f"{bad[0].file}:{bad[0].line}: no text to classify")
    encoded = [encode_classification(e, tokenizer, cfg.data, names) for e in inputs]
    probs = class_probabilities(model, encoded, pad_id_of(tokenizer), batch_size,
                                desc="predicting" if len(encoded) > batch_size else None)
    handle = open(out, "w", encoding="utf-8") if out else sys.stdout
    try:
        for example, row in zip(inputs, probs):
            record = {"line": example.line, "text": example.text, "label": names[int(row.argmax())],
                      "probabilities": {n: round(float(x), 6) for n, x in zip(names, row)}}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        if out:
            handle.close()
    return (Path(out) if out else None), len(inputs)
