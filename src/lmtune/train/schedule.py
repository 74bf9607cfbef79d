"""Which examples go into which micro-batch at every optimizer step, as a pure function of the step.

The plan depends only on (seed, epoch, step), so a resumed run needs nothing but the step number to
continue on exactly the same data, and N processes take disjoint micro-batches of the same global
batch: rank r takes micro-batches r, r+N, r+2N, ... of the step's `grad_accum * world_size`.

Micro-batches hold `batch_size` examples, or, with a token budget (`max_tokens`), as many consecutive
examples of the epoch's order as fit in that many tokens: a GPU then gets work of an even size
whatever the example lengths. The number of micro-batches an epoch needs then depends on its
shuffle; the steps per epoch are counted on the first epoch's order, and a later epoch that needs
more wraps around like a short last step does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from lmtune.data.collate import length_grouped_order


@dataclass(frozen=True)
class BatchPlan:
    """Micro-batching of one training set for a given batch size, accumulation and world size."""

    n_examples: int
    batch_size: int
    grad_accum: int
    world_size: int
    seed: int
    lengths: tuple[int, ...] | None = None
    """Example lengths when batches are grouped by length (None: plain shuffling)."""
    max_tokens: int | None = None
    """Token budget of a micro-batch (None: `batch_size` examples each); needs `token_counts`."""
    token_counts: tuple[int, ...] | None = None
    """Tokens of each example, for the token budget."""

    def __post_init__(self) -> None:
        if self.max_tokens is not None and (self.token_counts is None or len(self.token_counts) != self.n_examples):
            raise ValueError("a token budget needs the token count of every example")

    @property
    def micro_per_step(self) -> int:
        """Micro-batches consumed by one optimizer step across all processes."""
        return self.grad_accum * self.world_size

    @cached_property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per pass over the data (the last step wraps around to stay full)."""
        n_micro = len(self.epoch_batches(0)) if self.max_tokens else math.ceil(self.n_examples / self.batch_size)
        return max(1, math.ceil(n_micro / self.micro_per_step))

    def epoch_order(self, epoch: int) -> list[int]:
        """The example order of an epoch: a seeded shuffle, or length-grouped batches."""
        if self.lengths is not None:
            return length_grouped_order(list(self.lengths), self.batch_size, self.seed + epoch)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_examples, generator=gen).tolist()

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's order cut into micro-batches: by count, or greedily by the token budget."""
        order = self.epoch_order(epoch)
        if self.max_tokens is None:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        batches: list[list[int]] = []
        used = 0
        for i in order:
            n = self.token_counts[i]
            if not batches or used + n > self.max_tokens:
                batches.append([])
                used = 0
            batches[-1].append(i)
            used += n
        return batches

    def micro_batches(self, step: int, rank: int = 0) -> list[list[int]]:
        """Example indices of this rank's micro-batches for optimizer step `step` (0-based)."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        batches = self.epoch_batches(epoch)
        first = offset * self.micro_per_step
        chosen = [batches[(first + k) % len(batches)] for k in range(self.micro_per_step)]
        return chosen[rank :: self.world_size]

    def all_micro_batches(self, step: int) -> list[list[int]]:
        """Every process's micro-batches of a step (to count the step's global loss units)."""
        return [b for r in range(self.world_size) for b in self.micro_batches(step, r)]


def total_steps(plan: BatchPlan, epochs: float, max_steps: int | None) -> int:
    """Optimizer steps of the run: max_steps when set, else epochs x steps per epoch."""
    if max_steps is not None:
        return max_steps
    return max(1, math.ceil(epochs * plan.steps_per_epoch))
