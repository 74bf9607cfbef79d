"""Atomic folders: everything lmtune stores (checkpoints, prepared data, converted and exported models)
is written into a temporary sibling folder and renamed into place, so a crash never leaves half of it.

    with atomic_dir(run / "final") as tmp:
        model.save_pretrained(tmp)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _fsync(path: Path) -> None:
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
    tmp.chmod(0o755)  # mkdtemp makes it private; caches and exports may be shared between users
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
        if final.exists():
            if keep_existing:
                return
            # os.replace cannot overwrite a non-empty folder: move the old one aside first.
            old = Path(tempfile.mkdtemp(prefix=f".old-{final.name[:40]}-", dir=final.parent))
            os.replace(final, old / "x")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
