"""Target-speaker x-vectors: a SpeechBrain embedder, an on-disk cache, utterance/average modes and
the precomputed CMU ARCTIC set.

Every x-vector here is a 512-d float32 vector, L2-normalised, of 16 kHz mono audio: SpeechBrain's
``EncoderClassifier.encode_batch`` (``speechbrain/spkrec-xvect-voxceleb`` by default), as the
SpeechT5 VC recipe computes them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vc.audio import SAMPLE_RATE, content_hash, file_hash, load_audio
from vc.errors import ConfigError, MissingModelError

log = logging.getLogger(__name__)

XVECTOR_DIM = 512
MODES = ("utterance", "average")
PRECOMPUTED_REPO = "Matthijs/cmu-arctic-xvectors"
PRECOMPUTED_FILE = "spkrec-xvect.zip"
PRECOMPUTED_OVERRIDE = "data.speaker.use_precomputed_xvectors=false"
# cmu_us_bdl_arctic-wav-arctic_a0009.npy -> speaker "bdl", utterance "arctic_a0009"
_ARCTIC_NPY = re.compile(r"cmu_us_(?P<spk>[a-z0-9]+)_arctic-wav-(?P<utt>[A-Za-z0-9_]+)\.npy$")


def l2_normalise(vec: np.ndarray) -> np.ndarray:
    """(..., D) -> the same shape as float32 with unit L2 norm along the last axis."""
    vec = np.asarray(vec, dtype=np.float32)
    return vec / np.maximum(np.linalg.norm(vec, axis=-1, keepdims=True), 1e-12)


class SpeakerEmbedder:
    """16 kHz audio -> 512-d L2-normalised x-vector with a SpeechBrain ``EncoderClassifier``.

    Args:
        source: hub id or local folder of the SpeechBrain model.
        savedir: where SpeechBrain links the model files; None uses a local folder in place and the
            hub cache for a hub id.
        device: torch device for the model, e.g. "cpu" or "cuda".

    The model loads on first use; offline or a missing folder raise
    :class:`~vc.errors.MissingModelError` naming ``data.speaker.source``. ``calls`` counts the
    model's forward passes; ``identity`` names the model (and, for a local folder, a hash of its
    files) for cache keys.
    """

    def __init__(
        self,
        source: str = "speechbrain/spkrec-xvect-voxceleb",
        savedir: str | None = None,
        device: str = "cpu",
    ):
        self.source = str(source)
        self.savedir = savedir
        self.device = device
        self.calls = 0
        self._model = None
        self._identity: str | None = None

    @property
    def model(self):
        """The loaded ``EncoderClassifier`` (loads it on first access)."""
        if self._model is None:
            from vc.model.pretrained import load_speaker_encoder

            self._model = load_speaker_encoder(self.source, self.savedir, self.device)
            self._model.eval()
        return self._model

    @property
    def identity(self) -> str:
        """``source`` for a hub id; ``source`` plus a SHA-256 of hyperparams.yaml and the checkpoint
        files for a local folder, so retrained weights in the same folder change cache keys.
        Computed without loading the model, so cache hits never load it."""
        if self._identity is None:
            folder = Path(self.source).expanduser()
            if folder.is_dir():
                h = hashlib.sha256()
                files = [folder / "hyperparams.yaml", *sorted(folder.glob("*.ckpt"))]
                for file in files:
                    if file.is_file():
                        h.update(file.name.encode() + b"\0" + file.read_bytes())
                self._identity = f"{self.source}@{h.hexdigest()[:16]}"
            else:
                self._identity = self.source
        return self._identity

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """(T,) float32 mono audio at 16 kHz -> (512,) float32 x-vector with unit L2 norm."""
        return self.embed_batch([wav])[0]

    def embed_batch(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        """A list of (T_i,) float32 16 kHz clips -> (N, 512) float32 x-vectors, unit L2 norm, in order.

        Clips of the same length share one forward pass. Clips of different lengths are not
        zero-padded together (with ``wav_lens``): the TDNN layers reflect-pad each clip's edges
        and the feature normalisation counts frames, so a padded clip's vector drifts with its
        neighbours' lengths (up to 4e-2 per value on the tiny model) and a cached vector would
        depend on its batch. Results match :meth:`embed` one clip at a time within 1e-4, the
        noise SpeechBrain's statistics pooling adds to every call (about 1e-5 before the last
        layer), which also makes two calls on the same clip differ at that level.
        """
        import torch

        out = np.zeros((len(wavs), XVECTOR_DIM), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for i, wav in enumerate(wavs):
            by_length.setdefault(len(wav), []).append(i)
        model = self.model
        with torch.no_grad():
            for idx in by_length.values():
                batch = torch.from_numpy(np.stack([np.asarray(wavs[i], dtype=np.float32) for i in idx]))
                emb = model.encode_batch(batch, torch.ones(len(idx)))
                self.calls += 1
                out[idx] = emb.reshape(len(idx), -1).float().cpu().numpy()
        return l2_normalise(out)


def _ref_path(pair: Any) -> Path:
    """The audio a pair's target x-vector comes from: ``ref_path`` if set, else ``tgt_path``."""
    return Path(getattr(pair, "ref_path", None) or pair.tgt_path)


class XVectorCache:
    """On-disk x-vectors: ``cache_dir/<2 hex>/<sha256>.npy``, keyed by the audio's bytes and the
    embedder's ``identity``; written atomically, so concurrent ranks and interrupted runs leave
    either a whole file or none.

    ``hits`` and ``misses`` count vectors read from disk and computed.
    """

    def __init__(self, cache_dir: str | os.PathLike, embedder: SpeakerEmbedder):
        self.cache_dir = Path(cache_dir)
        self.embedder = embedder
        self.hits = 0
        self.misses = 0

    def key(self, path: str | os.PathLike) -> str:
        """Cache key of an audio file: SHA-256 of its bytes and the embedder's identity."""
        return file_hash(path, self.embedder.identity)

    def _file(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.npy"

    def _read(self, key: str) -> np.ndarray | None:
        file = self._file(key)
        if not file.is_file():
            return None
        try:
            vec = np.load(file)
        except (OSError, ValueError) as err:
            # A damaged file (disk full, copied half-way) is recomputed, not fatal.
            log.warning("unreadable cached x-vector %s (%s); recomputing it", file, err)
            return None
        self.hits += 1
        return vec

    def _write(self, key: str, vec: np.ndarray) -> None:
        file = self._file(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, np.asarray(vec, dtype=np.float32))
        os.replace(tmp, file)
        self.misses += 1

    def get(self, path: str | os.PathLike) -> np.ndarray:
        """Audio file (any format, rate, channels) -> (512,) float32 x-vector, from disk or computed."""
        return self.get_many([path])[0]

    def get_many(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Audio files -> (N, 512) x-vectors in order; the missing ones are computed together."""
        keys = [self.key(p) for p in paths]
        out = np.zeros((len(paths), XVECTOR_DIM), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            vec = self._read(key)
            if vec is None:
                todo.setdefault(key, []).append(i)
            else:
                out[i] = vec
        if todo:
            wavs = [load_audio(paths[idx[0]], SAMPLE_RATE) for idx in todo.values()]
            for (key, idx), vec in zip(todo.items(), self.embedder.embed_batch(wavs), strict=True):
                self._write(key, vec)
                out[idx] = vec
        return out

    def get_pairs(self, pairs: Sequence[Any]) -> np.ndarray:
        """Pairs (with ``tgt_path``, optional ``ref_path``) -> (N, 512) x-vectors of their reference audio."""
        return self.get_many([_ref_path(p) for p in pairs])

    def get_array(self, wav: np.ndarray) -> np.ndarray:
        """(T,) float32 16 kHz audio -> (512,) x-vector, cached by the samples' content hash."""
        key = content_hash(np.asarray(wav, dtype=np.float32), self.embedder.identity)
        vec = self._read(key)
        if vec is None:
            vec = self.embedder.embed(wav)
            self._write(key, vec)
        return vec


class VectorSource(Protocol):
    """What :func:`target_embeddings` reads x-vectors from: :class:`XVectorCache` or
    :class:`PrecomputedXVectors`."""

    def get_pairs(self, pairs: Sequence[Any]) -> np.ndarray: ...


def target_embeddings(
    pairs: Sequence[Any],
    cache: VectorSource,
    mode: str,
    train_ids: Iterable[str] | None = None,
) -> dict[str, np.ndarray]:
    """Each pair's target x-vector, ``{utt_id: (512,) float32}``.

    ``pairs`` have ``utt_id``, ``tgt_path`` (or ``ref_path``) and ``tgt_spk``. ``mode``
    "utterance" gives each pair its own target recording's vector; "average" gives every pair of
    a target speaker the re-normalised mean over that speaker's training utterances (``train_ids``;
    all pairs if None), so validation and test vectors never come from their own audio.
    """
    if mode not in MODES:
        raise ConfigError(f"data.speaker.mode={mode!r} is not one of {', '.join(MODES)}.")
    pairs = list(pairs)
    if mode == "utterance":
        return dict(zip([p.utt_id for p in pairs], cache.get_pairs(pairs), strict=True))
    train = None if train_ids is None else set(train_ids)
    by_spk: dict[str, list[Any]] = {}
    for p in pairs:
        if train is None or p.utt_id in train:
            by_spk.setdefault(p.tgt_spk, []).append(p)
    means = {spk: l2_normalise(cache.get_pairs(members).mean(axis=0)) for spk, members in by_spk.items()}
    lacking = sorted({p.tgt_spk for p in pairs} - means.keys())
    if lacking:
        raise ConfigError(
            f"data.speaker.mode=average: no training utterances of target speaker(s) {', '.join(lacking)} "
            "to average. Use data.speaker.mode=utterance or give those speakers training pairs."
        )
    return {p.utt_id: means[p.tgt_spk] for p in pairs}


def load_arctic_xvectors_zip(zip_path: str | os.PathLike) -> dict[tuple[str, str], np.ndarray]:
    """Read the precomputed ARCTIC x-vectors: a zip of ``cmu_us_<spk>_arctic-wav-<utt>.npy`` files
    (in any folder of the zip) -> ``{(spk, utt_id): (512,) float32}``, e.g. ``("bdl", "arctic_a0009")``.
    Other members are ignored."""
    table: dict[tuple[str, str], np.ndarray] = {}
    with zipfile.ZipFile(zip_path) as zf:
        for name in zf.namelist():
            m = _ARCTIC_NPY.search(name.rsplit("/", 1)[-1])
            if m:
                table[(m["spk"], m["utt"])] = (
                    np.load(io.BytesIO(zf.read(name))).astype(np.float32).reshape(-1)
                )
    return table


def fetch_arctic_xvectors(
    repo_id: str = PRECOMPUTED_REPO, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Download (or find in the hub cache) the precomputed ARCTIC x-vector zip; returns its path.

    ``repo_id`` is a hub dataset id, or a local copy: the zip itself or a folder holding
    ``spkrec-xvect.zip``. ``datasets`` 4+ no longer runs that repository's loading script, so the
    zip is fetched with ``huggingface_hub``. Offline without a cached copy:
    :class:`MissingModelError` with the override that turns the precomputed set off.
    """
    from huggingface_hub import hf_hub_download

    from vc.model.pretrained import is_missing_model_error

    local = Path(repo_id).expanduser()
    if local.is_dir():
        local = local / PRECOMPUTED_FILE
    if local.is_file():
        return local
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename=PRECOMPUTED_FILE,
                repo_type="dataset",
                cache_dir=None if cache_dir is None else str(cache_dir),
            )
        )
    except Exception as err:
        if is_missing_model_error(err):
            raise MissingModelError(
                "precomputed ARCTIC x-vectors",
                repo_id,
                PRECOMPUTED_OVERRIDE,
                err,
                fix=(
                    "Compute x-vectors with data.speaker.source instead (`data.speaker.use_precomputed_xvectors="
                    f"false`), or download the zip once (`huggingface-cli download --repo-type dataset {repo_id} "
                    f"{PRECOMPUTED_FILE}`) and set `data.speaker.precomputed_repo=/path/to/{PRECOMPUTED_FILE}`."
                ),
            ) from err
        raise


class PrecomputedXVectors:
    """Precomputed x-vectors by ``(speaker, utt_id)``, falling back to a runtime cache for the rest.

    ``table`` is what :func:`load_arctic_xvectors_zip` returns; ``fallback_cache`` an
    :class:`XVectorCache`. ``hits`` counts precomputed vectors used, ``fallbacks`` vectors the
    fallback gave (from its own cache or computed).
    """

    def __init__(self, table: Mapping[tuple[str, str], np.ndarray], fallback_cache: XVectorCache):
        self.table = table
        self.fallback = fallback_cache
        self.hits = 0
        self.fallbacks = 0

    def get(self, spk: str, utt_id: str, path: str | os.PathLike) -> np.ndarray:
        """(512,) unit-norm x-vector of speaker ``spk``'s utterance ``utt_id``; ``path`` (its audio)
        is embedded when the table lacks it."""
        vec = self.table.get((spk, utt_id))
        if vec is not None:
            self.hits += 1
            return l2_normalise(vec)
        self.fallbacks += 1
        return self.fallback.get(path)

    def get_pairs(self, pairs: Sequence[Any]) -> np.ndarray:
        """Pairs -> (N, 512): the precomputed vector of (``tgt_spk``, ``utt_id``) when the pair's
        reference is its own target recording, else the fallback's vector of the reference audio."""
        out = np.zeros((len(pairs), XVECTOR_DIM), dtype=np.float32)
        missing = []
        for i, p in enumerate(pairs):
            vec = None if getattr(p, "ref_path", None) else self.table.get((p.tgt_spk, p.utt_id))
            if vec is None:
                missing.append(i)
            else:
                out[i] = l2_normalise(vec)
        self.hits += len(pairs) - len(missing)
        self.fallbacks += len(missing)
        if missing:
            out[missing] = self.fallback.get_pairs([pairs[i] for i in missing])
        return out


def embeddings_for_pairs(
    pairs: Sequence[Any],
    train_ids: Iterable[str] | None = None,
    *,
    source: str = "speechbrain/spkrec-xvect-voxceleb",
    mode: str = "average",
    cache_dir: str | os.PathLike,
    device: str = "cpu",
    use_precomputed_xvectors: bool = False,
    precomputed_repo: str = PRECOMPUTED_REPO,
) -> tuple[dict[str, np.ndarray], int, int]:
    """The ``data.speaker`` config applied to pairs: ``({utt_id: (512,)}, hits, computed)``.

    ``hits`` counts vectors read from the cache or the precomputed set, ``computed`` vectors the
    embedder produced. The embedder loads only if some vector is not cached.
    """
    cache = XVectorCache(cache_dir, SpeakerEmbedder(source, device=device))
    vectors: VectorSource = cache
    precomputed = None
    if use_precomputed_xvectors:
        zip_path = fetch_arctic_xvectors(precomputed_repo)
        precomputed = PrecomputedXVectors(load_arctic_xvectors_zip(zip_path), cache)
        vectors = precomputed
    result = target_embeddings(pairs, vectors, mode, train_ids)
    hits = cache.hits + (precomputed.hits if precomputed else 0)
    return result, hits, cache.misses
