"""k-shot examples chosen per prompt by similarity, with the built-in MiniLM sentence encoder.

    shots = similar_shots(train, test, k=4, cache_dir="~/.cache/lmtune")   # one list per test example

Each evaluated example gets the k training examples whose MiniLM embedding (mean-pooled, unit
length; all-MiniLM-L6-v2 was trained for exactly this) is nearest by cosine similarity, the most
similar last, next to the question. Ties are broken by training order, so the choice is deterministic.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from lmtune.config import ModelConfig
from lmtune.data.records import Example
from lmtune.model.load import resolve_source

ENCODER = "minilm-l6"


def query_text(example: Example) -> str:
    """What a shot is matched on: a labelled example's text, or a chat's turns before its last answer."""
    if example.kind == "labelled":
        return example.text or ""
    if example.kind == "chat":
        last = max((i for i, m in enumerate(example.messages) if m.role == "assistant"), default=len(example.messages))
        return "\n".join(m.content for m in example.messages[:last] if m.role != "system")
    raise ValueError(f"{example.file}:{example.line}: {example.kind} examples are not prompts")


@torch.inference_mode()
def embed(texts: Sequence[str], cache_dir: str, batch_size: int = 64, desc: str | None = None) -> torch.Tensor:
    """Unit-length mean-pooled MiniLM embeddings, [n, 384]."""
    source = resolve_source(ModelConfig(name=ENCODER, cache_dir=cache_dir))
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval()
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=desc is None, dynamic_ncols=True):
        batch = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True, max_length=256,
                          return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].to(hidden.dtype)
        out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1))
    return torch.cat(out) if out else torch.zeros((0, 384))


def similar_shots(train: Sequence[Example], examples: Sequence[Example], k: int, cache_dir: str) -> list[list[Example]]:
    """For each example, its k most similar training examples (most similar last)."""
    if k <= 0 or not train:
        return [[] for _ in examples]
    k = min(k, len(train))
    train_emb = embed([query_text(e) for e in train], cache_dir, desc="embedding training examples")
    query_emb = embed([query_text(e) for e in examples], cache_dir)
    similarity = query_emb @ train_emb.T
    # A stable sort on the negated similarity keeps training order among ties.
    nearest = torch.sort(-similarity, dim=1, stable=True).indices[:, :k]
    return [[train[int(i)] for i in reversed(row.tolist())] for row in nearest]
