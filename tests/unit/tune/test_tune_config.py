"""The `tune:` section: typed, validated, its space keyed by real config paths; `--timeout` durations."""

from __future__ import annotations

import argparse

import optuna
import pytest

from lmtune.cli import _duration
from lmtune.config_file import ConfigError, config_from_dict
from lmtune.tune.space import objective_of, suggest, with_params


def tune_cfg(**tune):
    return config_from_dict({"tune": tune})


def test_defaults_search_learning_rate_log_uniform_and_follow_early_stopping():
    cfg = tune_cfg()
    lr = cfg.tune.space["training.learning_rate"]
    assert lr.type == "float" and lr.log and lr.low < lr.high
    assert objective_of(cfg) == ("eval_loss", "minimize")
    maxed = config_from_dict({"training": {"early_stopping": {"metric": "eval_macro_f1", "mode": "max"}}})
    assert objective_of(maxed) == ("eval_macro_f1", "maximize")


@pytest.mark.parametrize("tune, message", [
    ({"trails": 3}, "tune.trails: unknown key"),
    ({"space": {"training.learning_rat": {"type": "float", "low": 1e-5, "high": 1e-3}}}, "not a config value"),
    ({"space": {"training": {"type": "float", "low": 1e-5, "high": 1e-3}}}, "not a config value"),
    ({"space": {"lora.r": {"type": "categorical"}}}, "choices"),
    ({"space": {"lora.r": {"type": "int", "low": 8, "high": 4}}}, "low <= high"),
    ({"space": {"training.learning_rate": {"type": "float", "low": 0, "high": 1e-3, "log": True}}}, "low > 0"),
    ({"space": {"lora.r": {"type": "int", "low": 4, "high": 8, "sigma": 2}}}, "sigma: unknown key"),
])
def test_bad_tune_sections_are_errors_naming_the_key(tune, message):
    with pytest.raises(ConfigError, match=message):
        tune_cfg(**tune)


def test_sampled_values_land_in_the_config_and_refused_ones_are_errors():
    cfg = tune_cfg(space={"lora.r": {"type": "int", "low": 4, "high": 4},
                          "training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-4, "log": True}})
    trial = optuna.create_study().ask()
    tuned = with_params(cfg, suggest(trial, cfg.tune.space))
    assert tuned.lora.r == 4 and tuned.training.learning_rate == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="training.warmup_ratio"):
        with_params(cfg, {"training.warmup_ratio": 1.5})


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert _duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "soon", "-5m", "0s"])
def test_bad_durations(text):
    with pytest.raises(argparse.ArgumentTypeError):
        _duration(text)
