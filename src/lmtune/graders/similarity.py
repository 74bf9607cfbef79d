"""text_similarity scores in [0, 1]: fuzzy match, BLEU, GLEU, METEOR, ROUGE-1..5/L and MiniLM cosine.

Usage:
    similarity("fuzzy_match", "the cat sat", "the cat sat")            # 1.0
    similarity("cosine", "a dog", "a puppy", encoder=Encoder(cache_dir))  # the built-in MiniLM

fuzzy_match is difflib's SequenceMatcher ratio; BLEU is sacrebleu's sentence BLEU / 100 (its default
exponential smoothing); GLEU and METEOR are NLTK's on lower-cased whitespace tokens (METEOR with exact
and Porter-stem matches only: WordNet's synonym data cannot be downloaded here); ROUGE is Google's
rouge-score F-measure with the Porter stemmer; cosine is between the mean-pooled MiniLM embeddings
(clipped at 0). An empty input or reference scores 0 unless both are empty (then 1, except cosine).
"""

from __future__ import annotations

import difflib
from pathlib import Path

ROUGE_KEYS = {"rouge_1": "rouge1", "rouge_2": "rouge2", "rouge_3": "rouge3", "rouge_4": "rouge4",
              "rouge_5": "rouge5", "rouge_l": "rougeL"}
ENCODER = "minilm-l6"


class Encoder:
    """The built-in MiniLM sentence encoder, loaded on first use."""

    def __init__(self, cache_dir: str | Path = "~/.cache/lmtune"):
        self.cache_dir = str(cache_dir)
        self._loaded = None

    def __call__(self, texts: list[str]):
        """Unit-length mean-pooled embeddings [n, 384]."""
        import torch
        from transformers import AutoModel, AutoTokenizer

        from lmtune.config import ModelConfig
        from lmtune.model.load import resolve_source

        if self._loaded is None:
            source = resolve_source(ModelConfig(name=ENCODER, cache_dir=self.cache_dir))
            self._loaded = AutoTokenizer.from_pretrained(source), AutoModel.from_pretrained(source).eval()
        tokenizer, model = self._loaded
        with torch.inference_mode():
            batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"][..., None].to(hidden.dtype)
            return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)


class _NoSynonyms:
    """Stands in for NLTK's WordNet reader in METEOR: no synonym matches (the corpus is not installed)."""

    @staticmethod
    def synsets(word: str, *args, **kwargs) -> list:
        return []


def _tokens(text: str) -> list[str]:
    return text.lower().split()


def similarity(metric: str, hypothesis: str, reference: str, encoder: Encoder | None = None) -> float:
    """The text_similarity score of `hypothesis` against `reference` under `metric`."""
    if not hypothesis.strip() or not reference.strip():
        both_empty = not hypothesis.strip() and not reference.strip()
        return 1.0 if both_empty and metric != "cosine" else 0.0
    if metric == "fuzzy_match":
        return difflib.SequenceMatcher(None, hypothesis, reference, autojunk=False).ratio()
    if metric == "bleu":
        from sacrebleu.metrics import BLEU

        return BLEU(effective_order=True).sentence_score(hypothesis, [reference]).score / 100.0
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return float(sentence_gleu([_tokens(reference)], _tokens(hypothesis)))
    if metric == "meteor":
        from nltk.translate.meteor_score import meteor_score

        return float(meteor_score([_tokens(reference)], _tokens(hypothesis), wordnet=_NoSynonyms()))
    if metric in ROUGE_KEYS:
        from rouge_score import rouge_scorer

        key = ROUGE_KEYS[metric]
        return float(rouge_scorer.RougeScorer([key], use_stemmer=True).score(reference, hypothesis)[key].fmeasure)
    if metric == "cosine":
        if encoder is None:
            raise ValueError("cosine similarity needs the MiniLM encoder")
        a, b = encoder([hypothesis, reference])
        return max(0.0, min(1.0, float(a @ b)))
    raise ValueError(f"unknown evaluation_metric {metric!r}")
