"""Pinned losses (torchtune's recipe tests): `lmtune train` on tiny-llama, 4 steps, seed 0, per method.

Equivalence tests compare two code paths and miss a drift that moves both; these compare with numbers
recorded on the code before the pipeline/registry/loop restructure (issue 24), so any change in what
a method computes shows here. fp32 and one thread on purpose: `precision: auto` picks bf16 on a CPU
with AMX and fp32 on an AVX2-only one, which would pin different numbers per machine, and another
thread count may sum in another order. In fp32 the two CPU kinds' kernels differ by float rounding
only, which 4 steps of a 2-layer model should keep far below 1e-4; so far the pins were run on the
AVX2 machine only.
"""

from __future__ import annotations

import pytest

from lmtune.train.metrics_log import read_metrics

from .cli_helpers import SHARED, run_cli, sets

pytestmark = [pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}"), pytest.mark.slow]
HH = SHARED / "hh-rlhf-harmless" / "harmless-base-test.jsonl.gz"
GSM8K = SHARED / "gsm8k" / "train.jsonl"
COMMON = ["training.max_steps=4", "training.eval_every=4", "training.batch_size=4", "training.seed=0",
          "training.precision=fp32", "training.num_threads=1", "eval.at_end=false",
          "data.max_train_examples=32", "data.max_validation_examples=8", "data.leakage=warn"]
PAIRS = [f"data.train_file={HH}", "data.validation_file=null", "data.test_file=null", "data.max_seq_len=512"]
METHODS = {
    "sft": [],
    "classification": ["method.task=classification"],
    "reward": ["method.task=reward", *PAIRS],
    "dpo": ["method.task=dpo", *PAIRS],
    "grpo": ["method.task=grpo", f"data.train_file={GSM8K}", "data.validation_file=null", "data.test_file=null",
             "training.batch_size=2", "method.grpo.group_size=2", "method.grpo.max_new_tokens=8",
             "method.grpo.reward=lmtune.graders.rewards:answer_format"],
}
# Recorded on commit 9e885c0 (before the restructure) on an AVX2-only AMD EPYC: per step (loss, grad_norm).
# GRPO's loss is ~0 by construction here (on-policy, every completion 8 tokens long, so the advantages
# cancel; what is left is the KL term), so its gradient norms carry the check.
PINNED = {
    "classification": [(1.3890292644500732, 2.4946329593658447), (1.393101453781128, 2.41054105758667),
                       (1.2960401773452759, 2.3573074340820312), (1.421706199645996, 2.5172066688537598)],
    "dpo": [(0.6931471824645996, 0.5412042737007141), (0.6931471824645996, 0.6313154101371765),
            (0.7033309936523438, 0.48780086636543274), (0.7062309980392456, 0.7989880442619324)],
    "grpo": [(0.0, 0.1352660357952118), (0.0, 0.16100691258907318),
             (5.721301477024099e-06, 0.00032005104003474116), (1.2035965482937172e-05, 0.1471136212348938)],
    "reward": [(0.7294880151748657, 1.2724344730377197), (0.694469153881073, 0.16110695898532867),
               (0.6915465593338013, 0.11942378431558609), (0.6887735724449158, 0.9590914845466614)],
    "sft": [(5.5529350867638225, 0.5705414414405823), (5.56734381781684, 0.42468976974487305),
            (5.528663898336476, 0.5508086681365967), (5.439898564265325, 0.6597787737846375)],
}


def train_records(tmp_path, method: str) -> list[tuple[float, float]]:
    """(loss, grad_norm) of each step of a 4-step tiny run of `method`."""
    runs = tmp_path / "runs"
    overrides = sets(f"output.dir={runs}", f"model.cache_dir={tmp_path / 'cache'}", *COMMON, *METHODS[method])
    assert run_cli(["train", "configs/tiny.yaml", *overrides]) == 0
    (run,) = runs.iterdir()
    return [(r["loss"], r["grad_norm"]) for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_first_four_losses_are_pinned(tmp_path, method):
    got = train_records(tmp_path, method)
    assert len(got) == 4
    assert [loss for loss, _ in got] == pytest.approx([loss for loss, _ in PINNED[method]], abs=1e-4)
    assert [norm for _, norm in got] == pytest.approx([norm for _, norm in PINNED[method]], abs=1e-4)
