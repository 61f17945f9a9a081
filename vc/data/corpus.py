"""The types every corpus shares: a parallel pair and the result of pairing two sides.

A corpus is any object with a ``name`` (e.g. ``"arctic awb->clb"``), ``prepare() -> None``
(download or write the data; idempotent; called once, on rank 0) and
``load() -> PairingResult`` (read what is on disk; called on every rank).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Pair:
    """One parallel utterance: the source speaker's and the target speaker's recording of it.

    ``ref_path`` is the audio the target x-vector comes from when it is not ``tgt_path``.
    """

    utt_id: str
    src_path: Path
    tgt_path: Path
    text: str = ""
    tgt_spk: str = ""
    src_spk: str = ""
    ref_path: Path | None = None


@dataclass
class PairingResult:
    """The pairs two sides share, and the ids only one side has (dropped, but reported)."""

    pairs: list[Pair]
    src_only: list[str]
    tgt_only: list[str]
    src_name: str = "source"
    tgt_name: str = "target"

    def summary(self) -> str:
        """One line for logs, e.g. ``"1132 pairs (awb -> clb); dropped 2 ids only in awb, 0 only in clb"``."""
        return (
            f"{len(self.pairs)} pairs ({self.src_name} -> {self.tgt_name}); dropped "
            f"{len(self.src_only)} ids only in {self.src_name}, {len(self.tgt_only)} only in {self.tgt_name}"
        )


class Corpus(Protocol):
    """What :class:`vc.data.datamodule.VCDataModule` needs from a corpus."""

    name: str

    def prepare(self) -> None: ...

    def load(self) -> PairingResult: ...
