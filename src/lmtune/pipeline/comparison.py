"""The tail shared by `lmtune train` and `lmtune eval`: fine-tuned scores, forgetting, the comparison.

    evaluation = compare_with_base(out_dir, baselines, general_before, tuned, tokenizer, data, "test",
                                   cfg, objective, accelerator, echo)

The baselines (and the base's loss on general text) are scored first, by each caller, because which
model is the base differs: before any adapter exists in a training run, the adapter switched off
(or a reloaded base) for a finished run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from lmtune.config import RunConfig
from lmtune.evaluate.forgetting import forgetting_report, general_text_loss
from lmtune.evaluate.suite import fine_tuned_scores, write_comparison

Echo = Callable[[str], None]


def compare_with_base(out_dir: Path, baselines: dict[str, dict[str, Any]], general_before: dict | None, tuned,
                      tokenizer, data, split: str, cfg: RunConfig, objective, accelerator,
                      echo: Echo = print) -> dict[str, Any] | None:
    """Score `tuned` (None: the baselines alone) beside the baselines; write eval.json and the report.

    Returns the evaluation on the main process, None on the others.
    """
    systems = dict(baselines)
    forgetting = None
    if tuned is not None:
        echo(f"scoring the fine-tuned model on {len(data.examples.get(split) or [])} {split} examples ...")
        systems.update(fine_tuned_scores(tuned, tokenizer, data, split, cfg, objective, accelerator))
        if general_before and accelerator.is_main_process:
            after = general_text_loss(tuned, tokenizer, max_blocks=cfg.eval.forgetting_blocks,
                                      desc="general text (forgetting)")
            forgetting = forgetting_report(general_before, after)
    if not accelerator.is_main_process:
        return None
    return write_comparison(out_dir, systems, data, split, cfg, forgetting, echo)
