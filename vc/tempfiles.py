"""Temporary names for atomic writes, and the removal of those an interrupted run left behind.

A file or folder is written under a hidden temporary name that carries the writer's process id,
then renamed into place, so the real name is complete or absent. A kill -9 (or a power cut)
leaves the temporary behind; :func:`remove_stale` deletes those whose process is gone.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.tmp")


def temp_path(path: str | os.PathLike) -> Path:
    """The hidden temporary sibling ``.<name>.<pid>.tmp`` that ``path`` is written as first."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # Windows' os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the temporaries in ``folder`` (of ``name`` only, if given) whose writer has exited;
    returns what was deleted. A folder that cannot be listed has none to delete."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.fullmatch(entry.name)
        if match is None or (name is not None and match["name"] != name) or _alive(int(match["pid"])):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    return removed
