"""atomic_dir under SIGKILL at each point of a replacement: the old folder or the new one is there, whole,
once clean_interrupted() has run (load_checkpoint and prune_checkpoints run it on a run's checkpoints).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from lmtune.fsutil import atomic_dir, clean_interrupted


def _killed_while_replacing(folder: Path, at: str) -> None:
    """Fork a process that replaces folder/best (old -> new) and SIGKILLs itself at `at`."""
    pid = os.fork()
    if pid == 0:
        replace = os.replace

        def dying(src, dst):
            if at == "between-renames" and Path(src).name == "best":
                replace(src, dst)  # the old folder is moved aside ...
                os.kill(os.getpid(), signal.SIGKILL)  # ... and the new one never arrives
            if at == "before-rename":  # the new folder is complete and fsynced; nothing is renamed yet
                os.kill(os.getpid(), signal.SIGKILL)
            replace(src, dst)

        os.replace = dying
        with atomic_dir(folder / "best") as tmp:
            (tmp / "weights").write_text("new")
            if at == "mid-write":
                os.kill(os.getpid(), signal.SIGKILL)
            (tmp / "done").write_text("yes")
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.parametrize("at", ["mid-write", "before-rename", "between-renames"])
def test_a_kill_at_any_point_leaves_the_old_folder_recoverable(tmp_path, at):
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "weights").write_text("old")
    (tmp_path / "step-000001").mkdir()
    _killed_while_replacing(tmp_path, at)
    assert list(tmp_path.glob(".*"))  # the crash left its temporary folders behind
    assert (tmp_path / "best").exists() == (at != "between-renames")  # the window clean_interrupted closes
    clean_interrupted(tmp_path)
    assert (tmp_path / "best" / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "step-000001"]


def test_a_finished_replacement_is_kept(tmp_path):
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "weights").write_text("old")
    with atomic_dir(tmp_path / "best") as tmp:
        (tmp / "weights").write_text("new")
    clean_interrupted(tmp_path)
    assert (tmp_path / "best" / "weights").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["best"]
