"""`lmtune train` starts its ranks once: with num_processes > 1, and never from inside a rank."""

from __future__ import annotations

from lmtune.config import TrainingConfig
from lmtune.train.launch import launch_args, needs_launch


def test_several_processes_are_launched_once(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not needs_launch(TrainingConfig())
    assert needs_launch(TrainingConfig(num_processes=2))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not needs_launch(TrainingConfig(num_processes=2))  # already a rank: train, do not launch again


def test_the_ranks_run_the_same_module_and_arguments():
    args = launch_args(3, "lmtune.cli", ["train", "run.yaml", "--set", "a=b"], 29500)
    assert args[args.index("--num_processes") + 1] == "3"
    assert args[args.index("--main_process_port") + 1] == "29500"
    assert args[-6:] == ["-m", "lmtune.cli", "train", "run.yaml", "--set", "a=b"]
