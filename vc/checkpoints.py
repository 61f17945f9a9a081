"""Lightning checkpoints that a kill at any moment cannot spoil, and finding the one to resume from.

Lightning's own writer serialises to memory, writes a temporary file in the system temp folder
and moves it into place; when that folder is on another file system (a tmpfs ``/tmp``, a mounted
checkpoint volume) the move is a copy into the final name, so a kill -9 during it leaves a
truncated newest ``.ckpt``. Here a checkpoint is written under a hidden name in its own folder
and renamed into place: the file at a checkpoint's name is always complete.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger(__name__)

# what save_atomic names its temporary files: .<name>.<pid>.tmp, next to the final file
PARTIAL_GLOB = ".*.ckpt.*.tmp"


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` so that ``path`` only ever holds a complete file.

    The bytes go to ``.<name>.<pid>.tmp`` in the same folder, are flushed to the disk, and the file
    is renamed over ``path`` (a rename within one folder is atomic). A failed write removes its
    temporary file; a killed one leaves it for :func:`remove_partial_checkpoints`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            # on the disk before the rename, so a machine that goes down keeps the old or the new file
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer with :func:`save_atomic` for local paths.

    Every checkpoint the trainer writes (ModelCheckpoint's top-k and last.ckpt, on_exception.ckpt)
    goes through it; under DDP only rank 0 writes. Remote paths (``s3://...``) have no rename and
    keep Lightning's writer. Selected in ``conf/trainer/default.yaml`` (``plugins``).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        save_atomic(checkpoint, path)


def remove_partial_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder`` -> the paths removed."""
    removed = []
    for path in sorted(Path(folder).glob(PARTIAL_GLOB)):
        path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.warning(
            "removed %d partial checkpoint(s) that an interrupted run left: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why the ``.ckpt`` at ``path`` cannot be resumed from (cut short, damaged, not a checkpoint),
    or None when it is complete.

    ``torch.save`` writes a zip whose directory comes last, so a file cut short at any point has
    none; the pickled metadata (``data.pkl``) is read and its CRC checked. The tensors are not read
    (that would cost as much as loading the checkpoint).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            pickles = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if not pickles:
                return "not a PyTorch checkpoint (no data.pkl inside)"
            zf.read(pickles[0])
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        return f"cut short or damaged ({err})"
    return None


def newest_complete_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The most recently written complete ``.ckpt`` in ``folder``, or None.

    Each newer file that :func:`checkpoint_problem` rejects is skipped with a warning naming it.
    """
    found = sorted(Path(folder).glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log.warning("skipping checkpoint %s: %s; trying the next newest", path, problem)
    return None


class ExceptionCheckpoint(Checkpoint):
    """Writes ``<dirpath>/<filename>.ckpt`` when a fit stops on an exception or a signal (SIGTERM
    from a spot interruption or scancel), and removes it when a fit ends normally.

    Lightning's ``OnExceptionCheckpoint`` does the same with two side effects this one avoids: it
    also writes before the first training step (so a data or config error that stops a resumed run
    leaves an untrained, newest checkpoint that ``ckpt_path=last`` would resume from), and its mere
    presence makes ``fit(ckpt_path=None)`` resume from the newest checkpoint on its own, damaged or
    not. Here ``ckpt_path=last`` is the one way to resume, and it skips damaged files.
    """

    def __init__(self, dirpath: str | os.PathLike, filename: str = "on_exception"):
        super().__init__()
        # set now, not in setup(): an exception can come at any moment
        self.dirpath, self.filename = dirpath, filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, f"{self.filename}.ckpt")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if trainer.global_step == 0:
            return
        trainer.save_checkpoint(self.ckpt_path)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning calls callbacks' teardown only when a fit ends without an exception
        trainer.strategy.remove_checkpoint(self.ckpt_path)
