"""Atomic folders: everything lmtune stores (checkpoints, prepared data, converted and exported models)
is written into a temporary sibling folder and renamed into place, so a crash never leaves half of it.

    with atomic_dir(run / "final") as tmp:
        model.save_pretrained(tmp)
    clean_interrupted(run / "checkpoints")   # single writer only: undo what a crash left half done
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (a folder: so a rename into it survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_dir(final: Path, keep_existing: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; when the block succeeds it becomes `final`.

    An existing `final` is replaced (moved aside, then deleted after the rename), or, with
    keep_existing, kept as it is — for caches that another process may have filled meanwhile.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name[:40]}-", dir=final.parent))
    # mkdtemp makes it private; take the parent's mode instead: shared where caches and exports are
    # shared (0755), private inside a private folder such as lmtune serve's data directory (0700).
    tmp.chmod(stat.S_IMODE(final.parent.stat().st_mode))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync_path(f)
        if final.exists():
            if keep_existing:
                return
            # os.replace cannot overwrite a non-empty folder: move the old one aside first.
            # It keeps its name inside, so clean_interrupted() can put it back after a crash right here.
            old = Path(tempfile.mkdtemp(prefix=f".old-{final.name[:40]}-", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_path(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clean_interrupted(folder: Path) -> None:
    """Finish what a crash inside atomic_dir() left in `folder`: put back a folder that was moved aside
    for its replacement (the replacement never arrived), and delete temporary folders.

    Only for folders with a single writer (a run's checkpoints): a concurrent atomic_dir() here would
    lose its temporary folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for old in folder.glob(".old-*"):
        try:
            for kept in old.iterdir():
                if not (folder / kept.name).exists():
                    os.replace(kept, folder / kept.name)
        except (FileNotFoundError, NotADirectoryError):  # another process of the same run got there first
            pass
        shutil.rmtree(old, ignore_errors=True)
    for tmp in folder.glob(".*"):
        if tmp.is_dir():  # atomic_dir's temporaries: `.<name>-<random>`
            shutil.rmtree(tmp, ignore_errors=True)
