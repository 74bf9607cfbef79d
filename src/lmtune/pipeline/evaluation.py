"""`lmtune eval CONFIG_OR_RUN [--split test] [--limit N]`: the prompt-only baselines against a run's model.

For a run folder, the base model (the adapter switched off, or the base reloaded after full
fine-tuning) is scored zero-shot and few-shot beside the fine-tuned model; for a config, only the
base model's baselines are scored — "try prompt engineering first". Results go to
`<run>/eval-<split>/` (or a new folder under output.dir) as eval.json, predictions.jsonl and the report.
"""

from __future__ import annotations

import time
from pathlib import Path

from peft import PeftModel

from lmtune.config_file import load_config
from lmtune.data.prepare import prepare_data
from lmtune.evaluate.suite import Echo, check_eval_labels, prompt_baselines
from lmtune.graders.items import with_chat_files
from lmtune.model.export import load_trained
from lmtune.model.load import load_model, load_tokenizer
from lmtune.pipeline.comparison import compare_with_base
from lmtune.runs import run_config
from lmtune.train.hardware import make_accelerator
from lmtune.train.methods import method_of


def evaluate_target(target: str | Path, split: str = "test", limit: int | None = None, echo: Echo = print) -> Path:
    """Evaluate a run (baselines and fine-tuned) or a config (baselines only); return the output folder."""
    path = Path(target)
    is_run = (path / "config.yaml").exists() and (path / "final").exists()
    cfg = run_config(path) if is_run else load_config(path)
    if limit is not None:
        key = "max_test_examples" if split == "test" else "max_validation_examples"
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={key: limit})})
    out = path / f"eval-{split}" if is_run else Path(cfg.output.dir) / f"{cfg.output.name}-eval-{time.strftime('%Y%m%d-%H%M%S')}"

    method = method_of(cfg)
    tokenizer = load_tokenizer(cfg.model)
    cfg = with_chat_files(cfg, method.grader(cfg), out / "graded_data")  # a grader-trained run reads OpenAI reinforcement files
    data = prepare_data(cfg, tokenizer, encoding=method.encoding)
    check_eval_labels(cfg, data.label_names)
    if not data.examples.get(split):
        raise FileNotFoundError(f"the {split} split of {target} is empty")
    accelerator = make_accelerator(cfg.training)
    full_copy = method.copies_reference and cfg.method.peft == "none"  # its reference is a copy of the base
    objective = method.build(cfg, tokenizer, data, load_model(cfg.model)[0] if full_copy else None)

    tuned = None
    if is_run:
        tuned, tokenizer = load_trained(path / "final", base_cfg=cfg.model)
        tuned.eval()
    if isinstance(tuned, PeftModel) and method.baseline == "own_lm":
        with tuned.disable_adapter():  # the same weights without the adapter: no second copy
            baselines, general_before = prompt_baselines(cfg, data, split, objective, accelerator, tuned, tokenizer,
                                                         echo=echo)
    else:  # the base is loaded only when the baselines are not cached yet
        baselines, general_before = prompt_baselines(cfg, data, split, objective, accelerator, echo=echo)
    compare_with_base(out, baselines, general_before, tuned, tokenizer, data, split, cfg, objective, accelerator, echo)
    return out
