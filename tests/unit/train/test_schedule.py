"""The batch plan: every example once per epoch, ranks disjoint, resumable from the step alone."""

import pytest

from lmtune.train.schedule import BatchPlan, total_steps


def test_an_epoch_covers_every_example_once():
    plan = BatchPlan(n_examples=24, batch_size=4, grad_accum=2, world_size=1, seed=3)
    assert plan.steps_per_epoch == 3
    seen = [i for step in range(3) for mb in plan.micro_batches(step) for i in mb]
    assert sorted(seen) == list(range(24))
    # The next epoch is a different order of the same examples.
    nxt = [i for step in range(3, 6) for mb in plan.micro_batches(step) for i in mb]
    assert sorted(nxt) == list(range(24)) and nxt != seen


def test_a_short_last_step_wraps_around_to_stay_full():
    plan = BatchPlan(n_examples=10, batch_size=4, grad_accum=2, world_size=1, seed=0)
    assert plan.steps_per_epoch == 2
    assert [len(mb) for mb in plan.micro_batches(1)] == [2, 4]  # the 3rd batch (2 examples) then wrap


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_split_the_single_process_plan(world):
    one = BatchPlan(n_examples=40, batch_size=2, grad_accum=world, world_size=1, seed=1)
    many = BatchPlan(n_examples=40, batch_size=2, grad_accum=1, world_size=world, seed=1)
    for step in range(5):
        parts = [many.micro_batches(step, rank) for rank in range(world)]
        assert [mb for part in parts for mb in part] == one.micro_batches(step)
        assert many.all_micro_batches(step) == one.micro_batches(step)


def test_the_plan_is_a_pure_function_of_the_step():
    a = BatchPlan(n_examples=30, batch_size=4, grad_accum=1, world_size=1, seed=7)
    b = BatchPlan(n_examples=30, batch_size=4, grad_accum=1, world_size=1, seed=7)
    assert [a.micro_batches(s) for s in (9, 2, 5)] == [b.micro_batches(s) for s in (9, 2, 5)]


def test_length_grouping_makes_batches_of_similar_length():
    lengths = tuple((i * 37) % 200 + 1 for i in range(400))
    plan = BatchPlan(n_examples=400, batch_size=8, grad_accum=1, world_size=1, seed=0, lengths=lengths)
    spread = [max(lengths[i] for i in mb) - min(lengths[i] for i in mb) for s in range(50) for mb in plan.micro_batches(s)]
    assert sum(spread) / len(spread) < 20  # vs ~170 for random batches of 8 lengths in 1..200


def test_total_steps():
    plan = BatchPlan(n_examples=100, batch_size=10, grad_accum=1, world_size=1, seed=0)
    assert total_steps(plan, 2.5, None) == 25
    assert total_steps(plan, 2.5, 7) == 7


def test_a_token_budget_fills_micro_batches_by_tokens_in_the_epochs_order():
    tokens = tuple([30, 10, 25, 5, 60, 15, 20, 40] * 3)
    plan = BatchPlan(n_examples=24, batch_size=1, grad_accum=2, world_size=1, seed=5, max_tokens=50,
                     token_counts=tokens)
    batches = plan.epoch_batches(0)
    assert [i for b in batches for i in b] == plan.epoch_order(0)  # the same order, only cut differently
    for batch in batches:
        used = sum(tokens[i] for i in batch)
        assert used <= 50 or len(batch) == 1  # the 60-token examples go alone
    # Greedy: the next example would not have fitted in any batch but the last.
    for batch, nxt in zip(batches, batches[1:]):
        assert sum(tokens[i] for i in batch) + tokens[nxt[0]] > 50
    assert plan.steps_per_epoch == -(-len(batches) // 2)
    seen = [i for step in range(plan.steps_per_epoch) for mb in plan.micro_batches(step) for i in mb]
    assert set(seen) == set(range(24))


def test_a_token_budget_needs_every_examples_token_count():
    with pytest.raises(ValueError, match="token count of every example"):
        BatchPlan(n_examples=3, batch_size=1, grad_accum=1, world_size=1, seed=0, max_tokens=10, token_counts=(1, 2))
