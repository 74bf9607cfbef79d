"""Which examples go into which micro-batch at every optimizer step, as a pure function of the step.

The plan depends only on (seed, epoch, step), so a resumed run needs nothing but the step number to
continue on exactly the same data, and N processes take disjoint micro-batches of the same global
batch: rank r takes micro-batches r, r+N, r+2N, ... of the step's `grad_accum * world_size`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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

    @property
    def micro_per_step(self) -> int:
        """Micro-batches consumed by one optimizer step across all processes."""
        return self.grad_accum * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per pass over the data (the last step wraps around to stay full)."""
        n_micro = math.ceil(self.n_examples / self.batch_size)
        return max(1, math.ceil(n_micro / self.micro_per_step))

    def epoch_order(self, epoch: int) -> list[int]:
        """The example order of an epoch: a seeded shuffle, or length-grouped batches."""
        if self.lengths is not None:
            return length_grouped_order(list(self.lengths), self.batch_size, self.seed + epoch)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_examples, generator=gen).tolist()

    def micro_batches(self, step: int, rank: int = 0) -> list[list[int]]:
        """Example indices of this rank's micro-batches for optimizer step `step` (0-based)."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
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
