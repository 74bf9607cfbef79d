"""The method registry: one `Method` record per `method.task`, each declared beside its objective.

    method = method_of(cfg)                                  # the record of cfg.method.task
    model, tokenizer = load_model(cfg.model, method.head, method.outputs(data))
    objective = method.build(cfg, tokenizer, data, model)   # `model`: the base, before any adapter
    fit(model, training_items(cfg, data, "train"), training_items(cfg, data, "validation"), objective, ...)

Every stage above the loop asks the record (head, encoding, evaluation kind, baseline, plots, API
type) instead of comparing method names. A new method is one module with its objective and its
record, plus one line in METHODS (docs/training.md shows a worked example).
"""

from __future__ import annotations

from lmtune.config import RunConfig
from lmtune.train.classification import CLASSIFICATION
from lmtune.train.grpo import GRPO
from lmtune.train.objective import Method, Objective
from lmtune.train.pair_objectives import DPO, REWARD
from lmtune.train.sft import SFT

METHODS: dict[str, Method] = {m.name: m for m in (SFT, CLASSIFICATION, REWARD, DPO, GRPO)}
# The method a head model's prompt baselines run as: a causal LM answering by generation.
PROMPTED_BASELINE = SFT


def method_of(cfg: RunConfig) -> Method:
    """The record of the run's `method.task`, once it has checked that the config's settings apply to it."""
    try:
        method = METHODS[cfg.method.task]
    except KeyError:
        raise ValueError(f"unknown method.task {cfg.method.task!r}; known: {', '.join(METHODS)}") from None
    method.check(cfg)
    return method


def method_for_api(api_type: str) -> Method:
    """The method an OpenAI fine-tuning `method.type` (supervised, dpo, ...) asks for."""
    for method in METHODS.values():
        if method.api_type == api_type:
            return method
    raise ValueError(f"unsupported method type {api_type!r}")


def build_objective(cfg: RunConfig, tokenizer, data=None, model=None) -> Objective:
    """The objective named by cfg.method.task (`data` gives labels and class counts; `model`, the base
    before any adapter, is what DPO with full fine-tuning copies as its frozen reference)."""
    return method_of(cfg).build(cfg, tokenizer, data, model)


def training_items(cfg: RunConfig, data, split: str) -> list:
    """What the loop iterates over: encoded examples or pairs, or for GRPO the prompts themselves."""
    items_kind = method_of(cfg).items
    if items_kind == "prompts":
        return list(data.examples.get(split) or [])
    items = list(data.encoded.get(split) or [])
    if items_kind == "pairs" and items and not isinstance(items[0], tuple):
        raise ValueError(f"method.task {cfg.method.task} needs preference pairs (prompt, chosen, rejected); "
                         f"the {split} data are {data.examples[split][0].kind} examples")
    return items
