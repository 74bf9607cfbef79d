"""The rules that turn a job's "auto" hyperparameters into numbers once its training file is counted.

    auto_epochs(50, target=3), auto_batch_size(50_000, largest=8), scaled_multiplier(1.0, batch_size=2)

lmtune.serve.jobs.resolve_hyperparameters applies them to a job's "auto" values.

Like OpenAI's (docs/serve.md has them with worked examples):
- n_epochs: `default_n_epochs` (3), raised so that training sees at least MIN_EXAMPLES_SEEN examples
  (small files) or lowered so that it sees at most MAX_EXAMPLES_SEEN (large files), within 1..MAX_AUTO_EPOCHS.
- batch_size: about 0.2 % of the examples (ceil(n / 500)), at least 1 and at most `default_batch_size`,
  the largest batch the server's hardware is sized for (8 on a CPU).
- learning_rate_multiplier: `default_learning_rate_multiplier` x sqrt(batch_size / REFERENCE_BATCH):
  the square-root scaling of Adam's learning rate with the batch (Malladi et al., 2022), so small
  batches take proportionally smaller steps.
- beta (DPO): `default_beta`.
A number given by the client is kept as it is.
"""

from __future__ import annotations

import math

MIN_EXAMPLES_SEEN = 100
MAX_EXAMPLES_SEEN = 25_000
MAX_AUTO_EPOCHS = 25
EXAMPLES_PER_BATCH_ROW = 500  # batch_size ~ 0.2 % of the training examples
REFERENCE_BATCH = 8  # the batch the base learning rate (2e-4) was chosen at


def auto_epochs(n_examples: int, target: int) -> int:
    """`target` epochs, moved so that n_examples x epochs lands in [MIN_EXAMPLES_SEEN, MAX_EXAMPLES_SEEN]."""
    n = max(n_examples, 1)
    if n * target < MIN_EXAMPLES_SEEN:
        return min(MAX_AUTO_EPOCHS, math.ceil(MIN_EXAMPLES_SEEN / n))
    if n * target > MAX_EXAMPLES_SEEN:
        return max(1, MAX_EXAMPLES_SEEN // n)
    return target


def auto_batch_size(n_examples: int, largest: int) -> int:
    """About 0.2 % of the examples, from 1 to `largest`."""
    return max(1, min(largest, math.ceil(n_examples / EXAMPLES_PER_BATCH_ROW)))


def scaled_multiplier(base: float, batch_size: int) -> float:
    """`base` x sqrt(batch_size / REFERENCE_BATCH), rounded to 4 digits."""
    return round(base * math.sqrt(batch_size / REFERENCE_BATCH), 4)
