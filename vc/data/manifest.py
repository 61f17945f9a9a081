"""CSV manifests: any parallel data as rows of ``src_path,tgt_path[,ref_path,tgt_spk,text,utt_id]``.

Relative paths resolve against the CSV's folder, so a manifest and its audio can move together.
Every bad row is reported at once, with its line number, so one pass fixes the file; a row that
repeats an earlier pair (the same audio, whatever the paths) is left out with a warning.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections import Counter
from pathlib import Path

from vc.data.corpus import Pair, PairingResult
from vc.errors import DataError

REQUIRED = ("src_path", "tgt_path")
OPTIONAL = ("ref_path", "tgt_spk", "text", "utt_id")

log = logging.getLogger(__name__)


def _resolve(base: Path, value: str) -> Path:
    """A path from the manifest: absolute as written, else relative to the manifest's folder."""
    return base / Path(value).expanduser()


def _file_keys(paths: set[Path]) -> dict[Path, tuple]:
    """A key per file that is equal for two files exactly when their bytes are.

    Files are told apart by size first; only files that share a size have their first 64 KiB
    hashed, and only files that share that too are hashed whole, so a manifest of distinct
    recordings costs a stat per file and a short read for the few sizes that repeat.
    """
    keys = {p: (p.stat().st_size,) for p in paths}
    for head_only in (True, False):
        counts = Counter(keys.values())
        for p, key in keys.items():
            if counts[key] > 1:
                with open(p, "rb") as f:
                    digest = (
                        hashlib.sha256(f.read(1 << 16)) if head_only else hashlib.file_digest(f, "sha256")
                    )
                keys[p] = (*key, digest.hexdigest())
    return keys


def _pair_paths(values: dict[str, str]) -> tuple[str, str]:
    return values["src_path"], values["tgt_path"]


def _drop_duplicates(path: Path, base: Path, parsed: list[tuple[int, dict[str, str]]]) -> list:
    """``parsed`` rows without those that repeat an earlier row's source and target audio.

    Two rows are the same pair when their source files hold the same bytes and so do their target
    files, whatever the paths say (relative or absolute, through a symlink, or a copy under another
    name). Copies that were re-encoded or trimmed are different bytes and stay. The first row is
    kept; the others are named, with their line numbers, in one warning.
    """
    files = {value: _resolve(base, value).resolve() for _, values in parsed for value in _pair_paths(values)}
    keys = _file_keys(set(files.values()))
    first: dict[tuple, int] = {}
    kept, repeats = [], []
    for line, values in parsed:
        pair = tuple(keys[files[value]] for value in _pair_paths(values))
        if pair in first:
            repeats.append(f"line {line} repeats line {first[pair]}")
        else:
            first[pair] = line
            kept.append((line, values))
    if repeats:
        log.warning(
            "Manifest %s: left out %d duplicate row(s), the same source and target audio as an earlier "
            "row (a pair listed twice could land in both the training and the test split): %s. "
            "Remove them from the manifest to silence this warning.",
            path,
            len(repeats),
            "; ".join(repeats),
        )
    return kept


def read_manifest(path: str | os.PathLike) -> PairingResult:
    """Read a CSV manifest -> :class:`PairingResult` with one :class:`Pair` per row, in file order.

    Columns ``src_path`` and ``tgt_path`` are required; ``ref_path``, ``tgt_spk``, ``text`` and
    ``utt_id`` are optional and other columns are ignored. Without ``utt_id`` a row's id is its
    source file's stem, with ``-L<line>`` appended when stems repeat. A row whose source and target
    files hold the same bytes as an earlier row's is left out with a warning (see
    :func:`_drop_duplicates`). Raises :class:`DataError` listing every bad row (empty or missing
    value, missing file, duplicate id) by line number.
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

    parsed = _drop_duplicates(path, base, parsed)
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
        self._pairing: PairingResult | None = None

    def prepare(self) -> None:
        """Nothing to fetch or write: the manifest's audio is already on disk."""

    def load(self) -> PairingResult:
        """Read and check the manifest (see :func:`read_manifest`); once per object, so the data
        module's prepare and setup steps read, hash and warn once."""
        if self._pairing is None:
            self._pairing = read_manifest(self.path)
        return self._pairing
