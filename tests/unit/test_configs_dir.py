"""Every shipped YAML under configs/ loads against the schema, the data files it names exist, and the
reward it names (GRPO) can be loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmtune.config_file import load_config
from lmtune.graders.rewards import load_reward_function

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
IDS = [str(p.relative_to(ROOT / "configs")) for p in CONFIGS]
SHARED = ROOT.parent / "shared"


def test_there_are_configs_to_check():
    assert CONFIGS, f"no *.yaml in {ROOT / 'configs'}"
    assert {"tiny.yaml", "demo.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_config_loads(path):
    cfg = load_config(path)
    assert cfg.data.train_file, f"{path.name} names no training data"
    assert cfg.output.name, path.name


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_data_files_exist_relative_to_the_project_root(path):
    data = load_config(path).data
    named = [f for f in (data.train_file, data.validation_file, data.test_file) if f]
    # Paths in configs are relative to where `lmtune` runs: the project root.
    if any(f.startswith("../shared/") for f in named) and not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    # runs/data/ holds subsets a script writes first (the config's header names it, e.g. bench/gsm8k_easy.py).
    named = [f for f in named if not f.startswith("runs/")]
    missing = [f for f in named if not (ROOT / Path(f).expanduser()).is_file()]
    assert missing == [], f"{path.name} names data files that do not exist: {missing}"


GRPO = [p for p in CONFIGS if load_config(p).method.task == "grpo"]


def test_there_is_a_grpo_config():
    assert GRPO, "no GRPO config under configs/"


@pytest.mark.parametrize("path", GRPO, ids=[p.name for p in GRPO])
def test_grpo_reward_loads(path):
    cfg = load_config(path)
    fn = load_reward_function(cfg.method.grpo.reward, base_dir=ROOT)
    right, wrong = fn(["", ""], ["1 + 1 = 2\n#### 2", "I do not know."], ["#### 2", "#### 2"])
    assert right > wrong
