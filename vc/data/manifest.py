"""CSV manifests: any parallel data as rows of ``src_path,tgt_path[,ref_path,tgt_spk,text,utt_id]``.

Relative paths resolve against the CSV's folder, so a manifest and its audio can move together.
Every bad row is reported at once, with its line number, so one pass fixes the file.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

from vc.data.corpus import Pair, PairingResult
from vc.errors import DataError

REQUIRED = ("src_path", "tgt_path")
OPTIONAL = ("ref_path", "tgt_spk", "text", "utt_id")


def _resolve(base: Path, value: str) -> Path:
    """A path from the manifest: absolute as written, else relative to the manifest's folder."""
    return base / Path(value).expanduser()


def read_manifest(path: str | os.PathLike) -> PairingResult:
    """Read a CSV manifest -> :class:`PairingResult` with one :class:`Pair` per row, in file order.

    Columns ``src_path`` and ``tgt_path`` are required; ``ref_path``, ``tgt_spk``, ``text`` and
    ``utt_id`` are optional and other columns are ignored. Without ``utt_id`` a row's id is its
    source file's stem, with ``-L<line>`` appended when stems repeat. Raises :class:`DataError`
    listing every bad row (empty or missing value, missing file, duplicate id) by line number.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"Manifest {path}: no such file. Set data.corpus.path to a CSV with columns src_path,tgt_path."
        )
    base = path.parent
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [col for col in REQUIRED if col not in header]
        if missing:
            raise DataError(
                f"Manifest {path}: missing column(s) {', '.join(missing)}. Found: {', '.join(header) or 'no header'}; "
                f"needed: {', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)}). The first line must be the header."
            )
        reader.fieldnames = header
        rows = [(reader.line_num, row) for row in reader]

    errors: list[tuple[int, str]] = []
    parsed: list[tuple[int, dict[str, str]]] = []
    for line, row in rows:
        reasons = []
        if row.get(None):
            reasons.append(f"{len(row[None])} more field(s) than the header's {len(header)}")
        values = {col: (row.get(col) or "").strip() for col in (*REQUIRED, *OPTIONAL)}
        for col in (*REQUIRED, "ref_path"):
            if col in header and row.get(col) is None:
                reasons.append(f"no {col} (fewer fields than the header)")
            elif col in REQUIRED and not values[col]:
                reasons.append(f"empty {col}")
            elif values[col] and not _resolve(base, values[col]).is_file():
                reasons.append(f"{col} {_resolve(base, values[col])} does not exist")
        if reasons:
            errors.append((line, "; ".join(reasons)))
        else:
            parsed.append((line, values))

    stems = Counter(Path(values["src_path"]).stem for _, values in parsed if not values["utt_id"])
    first_line: dict[str, int] = {}
    pairs = []
    for line, values in parsed:
        utt_id = values["utt_id"] or Path(values["src_path"]).stem
        if not values["utt_id"] and stems[utt_id] > 1:
            utt_id = f"{utt_id}-L{line}"
        if utt_id in first_line:
            errors.append((line, f"duplicate utt_id {utt_id} (first on line {first_line[utt_id]})"))
            continue
        first_line[utt_id] = line
        pairs.append(
            Pair(
                utt_id=utt_id,
                src_path=_resolve(base, values["src_path"]),
                tgt_path=_resolve(base, values["tgt_path"]),
                text=values["text"],
                tgt_spk=values["tgt_spk"],
                ref_path=_resolve(base, values["ref_path"]) if values["ref_path"] else None,
            )
        )
    if errors:
        raise DataError(
            f"Manifest {path}: {len(errors)} bad row(s) (relative paths are relative to {base}):\n  "
            + "\n  ".join(f"line {line}: {reason}" for line, reason in sorted(errors))
            + "\nFix or remove those rows."
        )
    if not pairs:
        raise DataError(f"Manifest {path} has a header but no rows. Add one row per pair: src_path,tgt_path.")
    return PairingResult(pairs=pairs, src_only=[], tgt_only=[])


class ManifestCorpus:
    """A corpus given by a CSV manifest (see :func:`read_manifest`); nothing to download."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.name = f"manifest {self.path.name}"

    def prepare(self) -> None:
        """Nothing to fetch or write: the manifest's audio is already on disk."""

    def load(self) -> PairingResult:
        """Read and check the manifest (see :func:`read_manifest`)."""
        return read_manifest(self.path)
