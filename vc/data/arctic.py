"""CMU ARCTIC: download speakers, parse festvox prompts, pair two speakers by utterance id.

A speaker lives in ``root/cmu_us_<spk>_arctic/`` (or torchaudio's ``root/ARCTIC/cmu_us_<spk>_arctic/``)
with ``wav/<utt_id>.wav`` and ``etc/txt.done.data``. Downloads resume from a ``.part`` file,
are checked against torchaudio's SHA-256 table and are extracted member by member so that
no archive entry can land outside ``root``.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from torchaudio.datasets.cmuarctic import _CHECKSUMS
from tqdm.auto import tqdm

from vc.audio import file_hash
from vc.data.corpus import Pair, PairingResult
from vc.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_MIRROR = "http://festvox.org/cmu_arctic/packed/"

# speaker -> SHA-256 of cmu_us_<spk>_arctic.tar.bz2, from torchaudio's CMUARCTIC table (keyed there by
# festvox URL, so it holds for any mirror of the same files). Tests add entries for their own archives.
SHA256: dict[str, str] = {
    re.search(r"cmu_us_(\w+?)_arctic\.tar\.bz2$", url).group(1): digest for url, digest in _CHECKSUMS.items()
}

_PROMPT = re.compile(r'^\(\s*(\S+)\s+"(.*)"\s*\)$')
_CHUNK = 1 << 16


def folder_name(spk: str) -> str:
    """Speaker name -> its festvox folder name, e.g. ``awb`` -> ``cmu_us_awb_arctic``."""
    return f"cmu_us_{spk}_arctic"


def speaker_dir(root: str | os.PathLike, spk: str) -> Path | None:
    """The folder of speaker ``spk`` under ``root`` (festvox or torchaudio layout), or None."""
    for candidate in (Path(root) / folder_name(spk), Path(root) / "ARCTIC" / folder_name(spk)):
        if candidate.is_dir():
            return candidate
    return None


def read_prompts(path: str | os.PathLike) -> dict[str, str]:
    """Parse a festvox ``txt.done.data`` file -> {utt_id: text}, in file order.

    Lines look like ``( arctic_a0001 "Author of the danger trail, Philip Steels, etc." )``.
    Blank lines are skipped; any other line that does not parse raises :class:`DataError`.
    """
    prompts: dict[str, str] = {}
    bad: list[str] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        match = _PROMPT.match(line)
        if match is None:
            bad.append(f"line {number}: {line[:80]!r}")
            continue
        prompts[match.group(1)] = match.group(2).replace('\\"', '"')
    if bad:
        raise DataError(
            f"{path}: {len(bad)} line(s) are not festvox prompts like "
            f'( arctic_a0001 "Some text." ):\n  ' + "\n  ".join(bad) + "\nFix or delete those lines."
        )
    return prompts


def read_speaker(folder: str | os.PathLike) -> dict[str, tuple[Path, str]]:
    """One speaker's festvox folder -> {utt_id: (wav path, text)}.

    The ids are those of ``etc/txt.done.data``; wav files it does not list are ignored. Without
    that file, the ids are the names of ``wav/*.wav`` and the texts are empty (with a warning).
    """
    folder = Path(folder)
    prompts_file, wav_dir = folder / "etc" / "txt.done.data", folder / "wav"
    if not prompts_file.is_file():
        wavs = sorted(wav_dir.glob("*.wav"))
        if not wavs:
            raise DataError(
                f"{folder}: neither {prompts_file} nor any {wav_dir}/*.wav. A speaker folder holds "
                "wav/<utt_id>.wav and etc/txt.done.data; delete the folder and download it again."
            )
        log.warning("%s not found: pairing by wav file names, without text", prompts_file)
        return {wav.stem: (wav, "") for wav in wavs}
    prompts = read_prompts(prompts_file)
    if not prompts:
        raise DataError(f"{prompts_file} lists no utterances. Delete {folder} and download it again.")
    missing = [utt for utt in prompts if not (wav_dir / f"{utt}.wav").is_file()]
    if missing:
        raise DataError(
            f"{folder}: {len(missing)} of the {len(prompts)} utterances listed in {prompts_file} have no "
            f"wav file in {wav_dir}: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. "
            "The folder is incomplete: delete it and run again to re-download it, or remove those "
            "lines from txt.done.data."
        )
    return {utt: (wav_dir / f"{utt}.wav", text) for utt, text in prompts.items()}


def _no_folder(root: Path, spk: str, fix: str) -> DataError:
    return DataError(
        f"No folder for ARCTIC speaker '{spk}' under {root} (looked for {root / folder_name(spk)} "
        f"and {root / 'ARCTIC' / folder_name(spk)}). {fix}"
    )


def pair_speakers(root: str | os.PathLike, src_spk: str, tgt_spk: str) -> PairingResult:
    """Pair two speakers' folders under ``root`` by utterance id.

    Returns the shared ids as :class:`Pair` s sorted by id (text from the target's prompts, else
    the source's) and the ids only one side has. Raises :class:`DataError` if a folder is
    missing or the two share no id.
    """
    root = Path(root)
    sides = []
    for spk in (src_spk, tgt_spk):
        folder = speaker_dir(root, spk)
        if folder is None:
            raise _no_folder(
                root,
                spk,
                "Download it (data.corpus.download=true) or point data.corpus.root at the folder that "
                f"holds {folder_name(spk)}.",
            )
        sides.append((folder, read_speaker(folder)))
    (src_dir, src), (tgt_dir, tgt) = sides
    shared = sorted(src.keys() & tgt.keys())
    if not shared:
        raise DataError(
            f"{src_dir} ({len(src)} utterances, e.g. {next(iter(src))}) and {tgt_dir} ({len(tgt)}, e.g. "
            f"{next(iter(tgt))}) share no utterance id. Pick two speakers that read the same prompts, "
            "e.g. data.src_spk=awb data.tgt_spk=clb."
        )
    pairs = [
        Pair(
            utt_id=utt,
            src_path=src[utt][0],
            tgt_path=tgt[utt][0],
            text=tgt[utt][1] or src[utt][1],
            tgt_spk=tgt_spk,
            src_spk=src_spk,
        )
        for utt in shared
    ]
    return PairingResult(
        pairs=pairs,
        src_only=sorted(src.keys() - tgt.keys()),
        tgt_only=sorted(tgt.keys() - src.keys()),
        src_name=src_spk,
        tgt_name=tgt_spk,
    )


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Download ``url`` into ``part``, continuing from its current size with an HTTP Range request."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    retry = (
        f"Check the network, run again to resume from {part}, or point data.corpus.mirror at another copy of "
        "festvox's cmu_arctic/packed/ folder."
    )
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return  # nothing after ``offset``: the .part file is already whole
        raise DataError(f"Could not download {url}: HTTP {err.code} {err.reason}. {retry}") from None
    except (urllib.error.URLError, OSError) as err:
        raise DataError(f"Could not download {url}: {getattr(err, 'reason', err)}. {retry}") from None
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored the Range header and sends the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        with (
            open(part, "ab" if offset else "wb") as out,
            tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=part.stem
            ) as bar,
        ):
            try:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as err:
                raise DataError(
                    f"The download of {url} stopped after {out.tell()} bytes ({type(err).__name__}: {err}). "
                    f"{retry}"
                ) from None
            # http.client ends a body cut short by the server without an error
            if total is not None and out.tell() < total:
                raise DataError(f"The download of {url} stopped after {out.tell()} of {total} bytes. {retry}")


def _extract(archive: Path, root: Path, name: str) -> Path:
    """Extract ``archive`` and move its top folder ``name`` to ``root / name`` in one rename.

    Only regular files and folders are written, each checked to stay inside the extraction
    folder; links and device files are skipped. A half-done extraction never looks finished.
    """
    staging = root / f".{name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    skipped = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts:
                    raise DataError(
                        f"{archive} holds '{member.name}', a path outside the folder it extracts to; "
                        "it was deleted. Download it from festvox's mirror (data.corpus.mirror)."
                    )
                target = staging.joinpath(*path.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                else:
                    skipped += 1
        if not (staging / name).is_dir():
            raise DataError(
                f"{archive} does not hold a folder {name}/; it was deleted. Point data.corpus.mirror at a "
                "copy of festvox's cmu_arctic/packed/ folder."
            )
        os.replace(staging / name, root / name)
    except (tarfile.TarError, EOFError) as err:
        archive.unlink(missing_ok=True)
        raise DataError(
            f"{archive} is not a readable tar archive ({err}); it was deleted. Run again."
        ) from None
    except DataError:
        archive.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if skipped:
        log.warning("%s: skipped %d links or special files", archive, skipped)
    return root / name


def download_speaker(
    spk: str,
    root: str | os.PathLike,
    mirror: str = DEFAULT_MIRROR,
    verify_checksum: bool = True,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``{mirror}cmu_us_{spk}_arctic.tar.bz2`` and extract it -> ``root/cmu_us_{spk}_arctic``.

    Returns at once if that folder exists. Otherwise the archive is fetched into ``<archive>.part`` (resumed on the next call if interrupted),
    checked against ``sha256`` (default: :data:`SHA256` [spk]), renamed, extracted and deleted.
    A checksum mismatch deletes the download and raises :class:`DataError`.
    """
    root = Path(root)
    name = folder_name(spk)
    if (root / name).is_dir():
        return root / name
    root.mkdir(parents=True, exist_ok=True)
    url = f"{mirror.rstrip('/')}/{name}.tar.bz2"
    expected = sha256 or SHA256.get(spk)
    if verify_checksum and expected is None:
        raise DataError(
            f"No known SHA-256 for {url} ('{spk}' is not one of the ARCTIC speakers "
            f"{', '.join(sorted(SHA256))}). Pass sha256=..., or skip the check with "
            "data.corpus.verify_checksum=false."
        )
    archive = root / f"{name}.tar.bz2"
    if not archive.exists():
        part = archive.with_name(archive.name + ".part")
        log.info("downloading %s -> %s", url, archive)
        _fetch(url, part, timeout)
        if verify_checksum:
            actual = file_hash(part)
            if actual != expected:
                part.unlink()
                raise DataError(
                    f"Checksum mismatch for {url}: expected sha256 {expected}, got {actual}. The download "
                    "is corrupt or the mirror holds a different file; it was deleted. Run again, point "
                    "data.corpus.mirror at another copy of festvox's cmu_arctic/packed/ folder, or skip "
                    "the check with data.corpus.verify_checksum=false."
                )
        os.replace(part, archive)
    folder = _extract(archive, root, name)
    archive.unlink()
    return folder


class ArcticCorpus:
    """Two CMU ARCTIC speakers under ``root``, paired by utterance id; downloads the missing ones.

    Args:
        root: folder holding ``cmu_us_<spk>_arctic/`` (or ``ARCTIC/cmu_us_<spk>_arctic/``).
        src_spk, tgt_spk: ARCTIC speaker names, e.g. ``awb`` and ``clb``.
        download: fetch a missing speaker from ``mirror``; if false, a missing folder is an error.
        mirror: URL of a folder holding ``cmu_us_<spk>_arctic.tar.bz2`` (festvox's packed/ folder).
        verify_checksum: check each archive's SHA-256 against torchaudio's table.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        src_spk: str,
        tgt_spk: str,
        download: bool = True,
        mirror: str = DEFAULT_MIRROR,
        verify_checksum: bool = True,
    ):
        self.root = Path(root)
        self.src_spk, self.tgt_spk = src_spk, tgt_spk
        self.download, self.mirror, self.verify_checksum = download, mirror, verify_checksum
        self.name = f"arctic {src_spk}->{tgt_spk}"

    def prepare(self) -> None:
        """Make sure both speakers' folders exist, downloading what is missing (rank 0, idempotent)."""
        for spk in dict.fromkeys((self.src_spk, self.tgt_spk)):
            if speaker_dir(self.root, spk) is not None:
                continue
            if spk not in SHA256:
                raise DataError(
                    f"Unknown ARCTIC speaker '{spk}': not one of {', '.join(sorted(SHA256))}, and {self.root} "
                    f"has no folder {folder_name(spk)}. Fix data.src_spk / data.tgt_spk, or put that "
                    "speaker's festvox folder under data.corpus.root."
                )
            if not self.download:
                raise _no_folder(
                    self.root,
                    spk,
                    "Set data.corpus.download=true to fetch it, or point data.corpus.root at the folder that "
                    f"holds {folder_name(spk)}.",
                )
            download_speaker(spk, self.root, self.mirror, self.verify_checksum)

    def load(self) -> PairingResult:
        """Pair the two speakers' utterances by id (see :func:`pair_speakers`)."""
        return pair_speakers(self.root, self.src_spk, self.tgt_spk)
