"""The method registry: one record per `method.task`, the API types it answers to, and the docs' example."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmtune.config import MethodConfig, RunConfig
from lmtune.config_file import ConfigError
from lmtune.serve.config import ServeConfig
from lmtune.serve.jobs import build_run_config
from lmtune.train.methods import METHODS, method_for_api, method_of
from lmtune.train.objective import Objective
from lmtune.train.sft import SftObjective

DOCS = Path(__file__).resolve().parents[3] / "docs" / "training.md"


def test_every_task_the_config_accepts_has_exactly_one_record():
    tasks = typing.get_args(MethodConfig.model_fields["task"].annotation)
    assert sorted(METHODS) == sorted(tasks)
    assert all(METHODS[name].name == name for name in METHODS)


def test_the_records_build_objectives_that_the_loop_can_call():
    for method in METHODS.values():
        assert callable(method.build) and method.head in ("causal_lm", "sequence_classification")
    assert method_of(RunConfig.model_validate({"method": {"task": "dpo"}})).items == "pairs"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_record_refuses_the_settings_it_says_do_not_apply(name):
    method = METHODS[name]
    settings = {"head_only": {"method": {"task": name, "peft": "head"}},
                "token_budget": {"method": {"task": name}, "training": {"max_tokens_per_batch": 512}}}
    for field, tree in settings.items():
        cfg = RunConfig.model_validate(tree)  # the config itself knows no method: the record decides
        if getattr(method, field):
            assert method_of(cfg) is method
        else:
            with pytest.raises(ConfigError, match=f"(does not apply|trains only).*method.task {name}"):
                method_of(cfg)


def test_a_config_the_method_refuses_fails_lmtune_train_before_any_run_folder(tmp_path, capsys):
    from lmtune.cli import main

    out = tmp_path / "runs"
    config = tmp_path / "run.yaml"
    config.write_text(f"model:\n  name: tiny-llama\nmethod:\n  task: dpo\n  peft: head\noutput:\n  dir: {out}\n")
    code = main(["train", str(config)])
    assert code == 2
    assert "method.peft head trains only a classification or reward head, not method.task dpo" in capsys.readouterr().err
    assert not out.exists()


def test_the_openai_method_types_map_through_the_registry():
    assert method_for_api("supervised").name == "sft"
    assert method_for_api("dpo").name == "dpo"
    # serve/jobs.py maps them itself, without the registry: its API process must not import torch.
    serve_cfg = ServeConfig(data_dir="unused")
    for api_type, hp in (("supervised", {}), ("dpo", {"beta": 0.2})):
        hp = {"n_epochs": 1, "batch_size": 2, "learning_rate_multiplier": 1.0, **hp}
        job = {"method": {"type": api_type, api_type: {"hyperparameters": hp}}, "model": "tiny-llama",
               "project": "p", "seed": 0, "id": "ftjob-1"}
        assert build_run_config(job, serve_cfg, "train.jsonl", None).method.task == method_for_api(api_type).name
    with pytest.raises(ValueError, match="unsupported method type 'reinforcement'"):
        method_for_api("reinforcement")


def test_an_objective_must_define_its_loss():
    class Half(Objective):
        def collate(self, items):
            return {}

    with pytest.raises(TypeError, match="loss"):
        Half()


def test_the_worked_example_in_the_docs_runs_and_smooths_the_labels(encoded, make_model):
    code = re.search(r"```python\n(# src/lmtune/train/smoothed_sft.py.*?)```", DOCS.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    objective = namespace["SmoothedSftObjective"](True, 0)
    batch = objective.collate(encoded[:3])
    model = make_model()
    loss_sum, sums = objective.loss(model, batch)
    # By hand: 0.9 of the target's cross-entropy plus 0.1 of the mean -log p over the vocabulary.
    keep = batch["target_ids"] != -100
    # use_cache=False as in training: with a cache, transformers would not see the packed rows as separate.
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
    logits = out.logits.float()[keep]
    logp = logits.log_softmax(-1)
    gold = batch["target_ids"][keep]
    expected = (0.9 * -logp.gather(1, gold[:, None]).squeeze(1) - 0.1 * logp.mean(-1)).sum()
    assert loss_sum.item() == pytest.approx(expected.item(), rel=1e-5)
    plain, _ = SftObjective(True, 0).loss(model, batch)
    assert plain.item() == pytest.approx(F.cross_entropy(logits, gold, reduction="sum").item(), rel=1e-5)
    assert namespace["SMOOTHED_SFT"].name == "smoothed_sft" and sums["n_correct"].dtype == torch.int64
