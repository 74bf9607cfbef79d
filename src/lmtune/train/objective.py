"""What a training method is: an `Objective` for the one loop, and a `Method` record for everything else.

    class MyObjective(Objective):                 # collate + loss (+ units, length, summarize)
        def loss(self, model, batch): ...         # -> (summed loss, detached metric sums)
    MY_METHOD = Method(name="my", build=..., ...) # declared beside the objective, listed in train/methods.py

The loop owns normalisation: an objective returns the *sum* of its per-unit losses (tokens for
language modelling, pairs for preference losses) and the batch says how many units it holds
(`batch["n_units"]`), so gradient accumulation and data parallelism divide by the global count of
units over the whole optimizer step: exactly one large batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch

from lmtune.config import RunConfig
from lmtune.config_file import ConfigError

Batch = dict[str, Any]
Sums = dict[str, torch.Tensor]


class Objective(ABC):
    """What a method adds to the one training loop: how to batch its items and what loss to take."""

    name: str = ""
    packs: bool = False
    """Batches are packed rows (restarting position ids, no attention mask): varlen attention applies."""
    margins: Callable[[torch.nn.Module, Batch], Sums] | None = None
    """Preference objectives: per-pair margins (> 0 means the chosen answer wins), for held-out accuracy."""
    prepare: Callable[[torch.nn.Module, list, int], list] | None = None
    """Run once on the training and validation sets before training (e.g. precomputed reference log-probs)."""

    @abstractmethod
    def collate(self, items: list) -> Batch:
        """One micro-batch (tensors and `n_units`) from encoded items."""

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, Sums]:
        """(summed loss of the batch, detached metric sums) for the loop to normalise and log."""

    @abstractmethod
    def units(self, item: Any) -> int:
        """Number of loss units (e.g. supervised tokens) one encoded item contributes."""

    @abstractmethod
    def length(self, item: Any) -> int:
        """Number of tokens of one encoded item (for throughput and length grouping)."""

    @abstractmethod
    def summarize(self, totals: dict[str, float], n_units: float) -> dict[str, float]:
        """Turn summed statistics and the unit count into eval_* metrics."""


def pad_id_of(tokenizer) -> int:
    """The id that pads batches (the EOS id when the tokenizer has no pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@dataclass(frozen=True)
class Plot:
    """A training curve a method draws into its run folder besides loss.png."""

    metric: str
    """The metrics.jsonl key (without the train_/eval_ prefix)."""
    file: str
    label: str
    also: Callable[[Any], tuple[str, ...]] = lambda cfg: ()
    """More keys drawn beside it, from the run's config (e.g. GRPO's monitored rewards)."""


@dataclass(frozen=True)
class Method:
    """One training method, as every stage above the loop sees it (listed in train/methods.py)."""

    name: str
    """The `method.task` value."""
    build: Callable[..., Objective]
    """build(cfg, tokenizer, data, model) -> the objective (`model` is the base before any adapter)."""
    head: Literal["causal_lm", "sequence_classification"] = "causal_lm"
    """The transformers head it trains."""
    encoding: Literal["causal_lm", "sequence"] = "causal_lm"
    """How data/prepare.py encodes its examples: chat/answer tokens, or the text alone for a head."""
    items: Literal["encoded", "pairs", "prompts"] = "encoded"
    """What the loop iterates over: encoded examples, encoded preference pairs, or the prompts themselves."""
    outputs: Callable[[Any], int | None] = lambda data: None
    """The head's number of outputs given the prepared data (None for a causal LM)."""
    evaluation: Literal["answers", "head", "pairs"] = "answers"
    """How the test split is scored: generated answers (or loss on raw text), head predictions, or pairs."""
    baseline: Literal["own_lm", "own_head", "prompted_lm"] = "own_lm"
    """The base it is compared with: its own LM (adapter off), its own untrained head, or a prompted LM."""
    plots: tuple[Plot, ...] = ()
    """Curves drawn besides loss.png."""
    config_section: str | None = None
    """The `method.<section>` of the config it reads (e.g. `dpo`), if any."""
    copies_reference: bool = False
    """Full fine-tuning needs a frozen copy of the base as its reference (DPO)."""
    head_only: bool = False
    """`method.peft: head` (a linear probe on a frozen body) applies."""
    token_budget: bool = True
    """`training.max_tokens_per_batch` applies (its items have a length before the step)."""
    api_type: str | None = None
    """The OpenAI fine-tuning API `method.type` it answers to (serve/jobs.py), if any."""
    grader: Callable[[Any], dict[str, Any] | None] = lambda cfg: None
    """The run config's grader, if the method trains on one (its data are then OpenAI reinforcement files)."""

    def check(self, cfg: RunConfig) -> None:
        """Refuse settings this method cannot honour, naming them (a ConfigError, before any work starts)."""
        if cfg.method.peft == "head" and not self.head_only:
            raise ConfigError(f"method.peft head trains only a classification or reward head, "
                             f"not method.task {self.name}")
        if cfg.training.max_tokens_per_batch is not None and not self.token_budget:
            raise ConfigError(f"training.max_tokens_per_batch does not apply to method.task {self.name}: its "
                             "tokens are sampled during the step (use training.batch_size)")

    @property
    def scores_sequences(self) -> bool:
        """A reward model: a one-output head that scores whole sequences (`lmtune score`)."""
        return self.head == "sequence_classification" and self.evaluation == "pairs"
