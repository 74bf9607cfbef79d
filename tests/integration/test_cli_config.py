"""`lmtune config` and `lmtune data prepare`: the schema, shown configs, overrides and their errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmtune.cli import main

from .cli_helpers import ROOT, needs_data, sets

pytestmark = pytest.mark.usefixtures("in_project_root")


def test_config_schema(capsys):
    assert main(["config", "schema"]) == 0
    out = capsys.readouterr().out
    assert "training.learning_rate = 0.0002  [float]  # Peak learning rate." in out
    assert "data.split.validation = 0.1" in out


def test_config_show_marks_a_split_fraction_that_a_file_overrides(capsys):
    assert main(["config", "show", "configs/tiny.yaml"]) == 0
    out = capsys.readouterr().out
    assert "    test: 0.1  # ignored: data.test_file is set" in out
    assert "    validation: 0.1  # ignored: data.validation_file is set" in out
    assert yaml.safe_load(out)["data"]["split"] == {"validation": 0.1, "test": 0.1}  # still a loadable config
    assert main(["config", "show", "configs/tiny.yaml", *sets("data.test_file=null")]) == 0
    assert "    test: 0.1\n" in capsys.readouterr().out


def test_config_show_applies_overrides(capsys):
    assert main(["config", "show", "configs/tiny.yaml", *sets("training.learning_rate=1e-4")]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["training"]["learning_rate"] == 1e-4
    assert shown["model"]["name"] == "tiny-llama" and shown["training"]["max_steps"] == 12  # from the file
    assert shown["lora"]["r"] == 16  # from the defaults


@pytest.mark.parametrize("command", ["config show", "train", "data prepare"])
def test_a_bad_override_exits_2_naming_the_key_and_file(capsys, tmp_path, command):
    argv = [*command.split(), "configs/tiny.yaml", *sets(f"output.dir={tmp_path}", "training.batch_size=x")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "training.batch_size" in err and "configs/tiny.yaml" in err and "'x'" in err
    assert list(tmp_path.iterdir()) == []  # no run folder for a config that does not validate


def test_the_installed_entry_point_exits_2_on_an_unknown_key():
    exe = Path(sys.executable).with_name("lmtune")
    exe = exe if exe.exists() else shutil.which("lmtune")
    assert exe, "the lmtune entry point is not installed"
    done = subprocess.run([str(exe), "config", "show", "configs/tiny.yaml", "--set", "training.learning_rat=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "lmtune: error: invalid config (configs/tiny.yaml with --set training.learning_rat=1)" in done.stderr
    assert "training.learning_rat: unknown key" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@needs_data
@pytest.mark.slow
def test_data_prepare_twice_reuses_the_cache(tmp_path, capsys):
    argv = ["data", "prepare", "configs/tiny.yaml", *sets(f"model.cache_dir={tmp_path}")]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    second = capsys.readouterr().out
    (wrote,) = [ln for ln in first.splitlines() if ln.startswith("wrote ")]
    cache_dir = wrote.removeprefix("wrote ")
    assert Path(cache_dir).is_relative_to(tmp_path) and Path(cache_dir).is_dir()
    assert second.splitlines()[-1] == f"reused {cache_dir}"
    assert "train           200" in first and first.splitlines()[:-1] == second.splitlines()[:-1]
