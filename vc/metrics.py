"""Objective metrics for voice conversion, computed on arrays (no file I/O).

Audio comes in as mono float arrays at 16 kHz (other rates are resampled to 16 kHz first, so every
number is comparable). Metrics: MCD with DTW, F0 RMSE / correlation / V-UV error / duration ratio,
speaker-embedding cosine similarity (SECS), CER/WER of an ASR transcript, DNSMOS.

MCD and F0 (:func:`mcd_f0`, :func:`mcd`, :func:`f0_metrics`; settings in :data:`MCD_SETTINGS`)
    The recipe of s3prl-vc's ``calculate_mcd_f0`` (``s3prl_vc/evaluate/dtw_based.py``), itself a port
    of ESPnet's ``utils/mcd_calculate.py``, the usual WORLD + SPTK + DTW MCD of VCC-style papers:
    samples scaled to the int16 range, 70 Hz low-cut FIR, WORLD harvest F0 and CheapTrick envelope
    (5 ms shift, FFT 1024), ``pysptk.sp2mc`` mel-cepstrum, frames more than 20 dB below the
    utterance's mean power dropped, DTW with Euclidean distance between mel-cepstra, and
    ``10 / ln 10 * sqrt(2 * sum_d (c_d - c'_d)^2)`` averaged over the aligned frame pairs.
    Where it differs, and why:

    - order 24 with alpha 0.41, ``pysptk.util.mcepalpha(16000)``: s3prl-vc's 39 / 0.466 are for
      24 kHz audio, and 0.41 is also ESPnet ``mcd_calculate.py``'s default (SPTK's table gives 0.42);
    - c0 (frame energy) is excluded, so a level change alone costs nothing (s3prl-vc keeps c0);
    - exact DTW instead of ``fastdtw`` (radius 1, an approximation): never a worse alignment, so the
      value can only be equal or slightly lower;
    - F0 is compared on the MCD's alignment, on frames voiced in both (s3prl-vc runs a second DTW
      over voiced frames only), which also gives the V/UV error on the same frames;
    - the duration ratio is the hyp/ref span from the first to the last frame above the power
      threshold (s3prl-vc reports ``|len(ref) - len(hyp)|`` after ``librosa.effects.trim``).

    pyworld 0.3.5 and pysptk 1.0.1 import ``pkg_resources`` when imported; setuptools 82 removed it,
    so they need ``setuptools<82``.

Values that cannot be computed
    Every metric returns :class:`Score` values: floats (arithmetic, numpy, ``json`` and CSV treat
    them as plain floats) that carry ``reason``, None when the value is valid. Empty, too short
    (< 0.1 s), silent, NaN/Inf or not-1-D audio, an empty reference text, or frames that leave the
    metric undefined give ``Score(nan, reason)``, never an exception. Model wrappers that return
    features or text (:meth:`SpeakerSimilarity.embed`, :meth:`Transcriber.transcribe`) raise
    :class:`~vc.errors.AudioError` for unusable audio instead, as there is no number to set to NaN.

Heavy packages (pyworld, pysptk, resemblyzer, pocketsphinx, speechmos, transformers, jiwer) are
imported on first use, so ``import vc.metrics`` stays fast; they come with the ``eval`` extra.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import unicodedata
import warnings
from typing import Any, NamedTuple

import numpy as np
from scipy.signal import firwin, lfilter
from scipy.spatial.distance import cdist

from vc.audio import SAMPLE_RATE, SILENCE_PEAK, resample
from vc.errors import AudioError, MissingModelError

MIN_SECONDS = 0.1
# harvest's F0 search range (Hz), wide enough for male and female voices without per-speaker settings
F0_RANGE = (40.0, 800.0)

MCD_SETTINGS: dict[str, Any] = {
    "reference": "s3prl-vc calculate_mcd_f0 (ESPnet utils/mcd_calculate.py): WORLD + SPTK + DTW",
    "sample_rate": SAMPLE_RATE,
    "int16_scaling": True,
    "low_cut_hz": 70,
    "f0_extractor": "pyworld.harvest",
    "f0_range_hz": F0_RANGE,
    "envelope": "pyworld.cheaptrick",
    "frame_shift_ms": 5.0,
    "fft_size": 1024,
    "mcep": "pysptk.sp2mc",
    "mcep_order": 24,
    "mcep_alpha": 0.41,
    "include_c0": False,
    "silence_threshold_db": -20.0,
    "dtw": "exact, Euclidean, steps (1,0) (0,1) (1,1)",
    "formula": "mean over aligned frames of 10/ln(10) * sqrt(2 * sum_d (c_d - c'_d)^2), c_1..c_24",
}

# Distributions whose versions identify the metric backends in reports.
_BACKENDS = (
    "pyworld",
    "pysptk",
    "Resemblyzer",
    "speechbrain",
    "pocketsphinx",
    "transformers",
    "jiwer",
    "speechmos",
    "onnxruntime",
)


class Score(float):
    """A metric value: a float that also says why it is NaN.

    ``Score(3.2)`` is valid (``reason`` None); ``Score(nan, "hyp: silent ...")`` is not. Arithmetic
    on a Score gives a plain float, so the reason stays with the value a metric returned.
    """

    __slots__ = ("reason",)

    def __new__(cls, value: float, reason: str | None = None) -> Score:
        self = super().__new__(cls, value)
        self.reason = reason
        return self

    def __reduce__(self):
        return (Score, (float(self), self.reason))


def _nan(reason: str) -> Score:
    return Score(math.nan, reason)


def _import(module: str):
    """Import an optional backend; a missing package names the extra that brings it."""
    try:
        with warnings.catch_warnings():
            # pyworld and pysptk import pkg_resources, which warns that it is deprecated
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name == "pkg_resources":
            raise ImportError(
                f"{module} imports pkg_resources, which setuptools 82 removed. "
                "Install `setuptools<82` (the `eval` extra pins it)."
            ) from err
        raise ImportError(
            f"the package {err.name!r} is missing (needed for {module}); "
            "install the evaluation extra: pip install 'speecht5-vc[eval]'"
        ) from err


def audio_problem(wav: Any, sr: int = SAMPLE_RATE, name: str = "audio", *, speech: bool = True) -> str | None:
    """Why ``wav`` cannot be scored, or None when it can.

    ``wav`` must be a non-empty 1-D float array of finite samples at ``sr`` Hz. With ``speech`` (the
    default) it must also be at least 0.1 s long and not silent (peak at or above
    ``vc.audio.SILENCE_PEAK``), which metrics that compare spectra or voices need.
    """
    arr = np.asarray(wav)
    if arr.ndim != 1:
        return f"{name}: expected a mono 1-D array, got shape {arr.shape}"
    if arr.size == 0:
        return f"{name}: empty (0 samples)"
    if not np.issubdtype(arr.dtype, np.floating):
        return f"{name}: expected float samples in [-1, 1], got dtype {arr.dtype}"
    if not np.all(np.isfinite(arr)):
        return f"{name}: contains NaN or Inf samples"
    if speech and arr.size < MIN_SECONDS * sr:
        return f"{name}: {arr.size / sr:.3f} s is shorter than the {MIN_SECONDS} s minimum"
    if speech and np.abs(arr).max() < SILENCE_PEAK:
        return f"{name}: silent (peak below {SILENCE_PEAK:g})"
    return None


def _to_16k(wav: Any, sr: int) -> np.ndarray:
    """A valid 1-D array (see :func:`audio_problem`) -> float32 at 16 kHz."""
    return resample(np.asarray(wav, dtype=np.float32), int(sr), SAMPLE_RATE)


# ---------------------------------------------------------------------------------------------
# DTW, MCD and F0


def dtw(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Exact dynamic time warping between two feature sequences.

    ``x`` is (N, D) and ``y`` is (M, D); the local cost is the Euclidean distance between frames,
    the steps are (1, 0), (0, 1) and (1, 1), all with weight 1 (as in ``fastdtw``). Returns the
    total cost along the best path and the path as an (L, 2) int array of (i, j) index pairs from
    (0, 0) to (N - 1, M - 1). Time O(N M) in vectorised rows, memory one (N, M) float64 matrix.
    """
    acc = cdist(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    n, m = acc.shape
    np.cumsum(acc[0], out=acc[0])
    for i in range(1, n):
        cost = acc[i]
        prev = acc[i - 1]
        # best entry into column j from the row above: straight down or diagonally
        from_above = prev.copy()
        from_above[1:] = np.minimum(prev[1:], prev[:-1])
        # horizontal runs within the row: acc[i, j] = min_k<=j (from_above[k] + cost[k..j] summed),
        # written with the row's cumulative sum so the whole row is one accumulate
        run = np.cumsum(cost)
        acc[i] = np.minimum.accumulate(from_above + cost - run) + run
    path = [(n - 1, m - 1)]
    i, j = n - 1, m - 1
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            # ties go to the diagonal, so identical sequences give the diagonal path
            diag, up, left = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
            if diag <= up and diag <= left:
                i, j = i - 1, j - 1
            elif up <= left:
                i -= 1
            else:
                j -= 1
        path.append((i, j))
    return float(acc[n - 1, m - 1]), np.array(path[::-1], dtype=np.int64)


class _Frames(NamedTuple):
    """WORLD analysis of one utterance at 5 ms frames: ``mcep`` (T, 24) c1..c24, ``f0`` (T,) Hz
    (0 = unvoiced), ``speech`` (T,) bool, True above the silence threshold."""

    mcep: np.ndarray
    f0: np.ndarray
    speech: np.ndarray


def _analyse(wav: np.ndarray, f0_range: tuple[float, float]) -> _Frames:
    """16 kHz float audio (T,) -> WORLD frames with the settings of :data:`MCD_SETTINGS`."""
    pyworld, pysptk = _import("pyworld"), _import("pysptk")
    s = MCD_SETTINGS
    # s3prl-vc analyses int16-range samples; WORLD's tiny safeguard noise then stays negligible
    x = wav.astype(np.float64) * np.iinfo(np.int16).max
    x = lfilter(firwin(255, s["low_cut_hz"] / (SAMPLE_RATE // 2), pass_zero=False), 1.0, x)
    x = np.ascontiguousarray(x)
    f0, times = pyworld.harvest(
        x, SAMPLE_RATE, f0_floor=f0_range[0], f0_ceil=f0_range[1], frame_period=s["frame_shift_ms"]
    )
    sp = pyworld.cheaptrick(x, f0, times, SAMPLE_RATE, fft_size=s["fft_size"])
    mcep = pysptk.sp2mc(sp, s["mcep_order"], s["mcep_alpha"])
    # frame power from the one-sided power envelope (s3prl-vc's spc2npow), in dB re the utterance mean
    power = (sp[:, 0] + sp[:, -1] + 2.0 * sp[:, 1:-1].sum(axis=1)) / (2 * (sp.shape[1] - 1))
    npow = 10.0 * np.log10(power / power.mean())
    return _Frames(mcep[:, 1:], f0, npow > s["silence_threshold_db"])


def _f0_scores(f0_ref: np.ndarray, f0_hyp: np.ndarray) -> dict[str, Score]:
    """F0 RMSE (Hz, cents), Pearson r and V/UV error from two aligned F0 tracks (L,) in Hz (0 = unvoiced)."""
    voiced_ref, voiced_hyp = f0_ref > 0, f0_hyp > 0
    vuv = Score(float(np.mean(voiced_ref != voiced_hyp)))
    both = voiced_ref & voiced_hyp
    if both.sum() < 2:
        reason = f"{int(both.sum())} aligned frame(s) voiced in both ref and hyp; F0 needs at least 2"
        return {
            "f0_rmse_hz": _nan(reason),
            "f0_rmse_cent": _nan(reason),
            "f0_corr": _nan(reason),
            "vuv_error": vuv,
        }
    ref, hyp = f0_ref[both], f0_hyp[both]
    if ref.std() == 0 or hyp.std() == 0:
        corr = _nan("F0 is constant over the frames voiced in both; the correlation is undefined")
    else:
        corr = Score(float(np.corrcoef(ref, hyp)[0, 1]))
    return {
        "f0_rmse_hz": Score(float(np.sqrt(np.mean((hyp - ref) ** 2)))),
        "f0_rmse_cent": Score(float(np.sqrt(np.mean((1200.0 * np.log2(hyp / ref)) ** 2)))),
        "f0_corr": corr,
        "vuv_error": vuv,
    }


def _span(speech: np.ndarray) -> int:
    """Frames from the first to the last True in a (T,) bool mask."""
    idx = np.flatnonzero(speech)
    return int(idx[-1] - idx[0] + 1)


_MCD_F0_KEYS = ("mcd", "f0_rmse_hz", "f0_rmse_cent", "f0_corr", "vuv_error", "duration_ratio")


def mcd_f0(
    ref: np.ndarray,
    hyp: np.ndarray,
    sr: int = SAMPLE_RATE,
    *,
    f0_range: tuple[float, float] = F0_RANGE,
) -> dict[str, Score]:
    """MCD and F0 metrics of ``hyp`` against ``ref`` from one WORLD analysis and one DTW.

    ``ref`` and ``hyp`` are mono float arrays (T,) at ``sr`` Hz; ``f0_range`` is harvest's search
    range in Hz (narrow it per speaker for fewer octave errors). Returns Scores:

    - ``mcd``: dB, over DTW-aligned speech frames (see the module docstring);
    - ``f0_rmse_hz``, ``f0_rmse_cent``, ``f0_corr``: on aligned frames voiced in both;
    - ``vuv_error``: fraction of aligned frames whose voicing decisions differ;
    - ``duration_ratio``: hyp speech span / ref speech span (leading and trailing silence trimmed).
    """
    reason = audio_problem(ref, sr, "ref") or audio_problem(hyp, sr, "hyp")
    if reason:
        return {key: _nan(reason) for key in _MCD_F0_KEYS}
    r = _analyse(_to_16k(ref, sr), f0_range)
    h = _analyse(_to_16k(hyp, sr), f0_range)
    ref_idx, hyp_idx = np.flatnonzero(r.speech), np.flatnonzero(h.speech)
    _, path = dtw(r.mcep[ref_idx], h.mcep[hyp_idx])
    ref_idx, hyp_idx = ref_idx[path[:, 0]], hyp_idx[path[:, 1]]
    diff2 = np.sum((r.mcep[ref_idx] - h.mcep[hyp_idx]) ** 2, axis=1)
    return {
        "mcd": Score(float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * diff2)))),
        **_f0_scores(r.f0[ref_idx], h.f0[hyp_idx]),
        "duration_ratio": Score(_span(h.speech) / _span(r.speech)),
    }


def mcd(
    ref: np.ndarray, hyp: np.ndarray, sr: int = SAMPLE_RATE, *, f0_range: tuple[float, float] = F0_RANGE
) -> Score:
    """Mel-cepstral distortion with DTW, in dB, of ``hyp`` against ``ref`` (mono float arrays at ``sr`` Hz).

    0 for identical inputs; see :data:`MCD_SETTINGS`. Call :func:`mcd_f0` to get MCD and the F0
    metrics from a single analysis.
    """
    return mcd_f0(ref, hyp, sr, f0_range=f0_range)["mcd"]


def f0_metrics(
    ref: np.ndarray, hyp: np.ndarray, sr: int = SAMPLE_RATE, *, f0_range: tuple[float, float] = F0_RANGE
) -> dict[str, Score]:
    """F0 RMSE (Hz, cents), F0 correlation, V/UV error and duration ratio: :func:`mcd_f0` without ``mcd``."""
    scores = mcd_f0(ref, hyp, sr, f0_range=f0_range)
    del scores["mcd"]
    return scores


# ---------------------------------------------------------------------------------------------
# Speaker similarity


class SpeakerSimilarity:
    """Speaker-embedding cosine similarity (SECS) between two clips.

    ``backend="resemblyzer"`` (default): Resemblyzer's d-vector ``VoiceEncoder``, whose weights ship
    in its wheel (offline); ``source`` optionally names another ``.pt`` weights file. It is not the
    embedding the model is conditioned on, so the score is not the model's own training target.
    ``backend="speechbrain"``: the project's x-vector embedder (:class:`vc.data.speakers.SpeakerEmbedder`,
    ``source`` a hub id or local folder, by default its ``speechbrain/spkrec-xvect-voxceleb``; ``savedir``
    its cache folder). Models load on first use.
    """

    BACKENDS = ("resemblyzer", "speechbrain")

    def __init__(
        self,
        backend: str = "resemblyzer",
        source: str | None = None,
        device: str = "cpu",
        savedir: str | None = None,
    ):
        if backend not in self.BACKENDS:
            raise ValueError(f"unknown speaker similarity backend {backend!r}; use one of {self.BACKENDS}")
        self.backend, self.source, self.device, self.savedir = backend, source, device, savedir
        self._model = None

    def _load(self):
        if self._model is None:
            if self.backend == "resemblyzer":
                resemblyzer = _import("resemblyzer")
                self._model = resemblyzer.VoiceEncoder(
                    device=self.device, verbose=False, weights_fpath=self.source
                )
            else:
                from vc.data.speakers import SpeakerEmbedder

                # without a source, SpeakerEmbedder's own default model (the one the project conditions on)
                source = {"source": self.source} if self.source else {}
                self._model = SpeakerEmbedder(**source, savedir=self.savedir, device=self.device)
        return self._model

    def embed(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        """Mono float audio (T,) at ``sr`` Hz -> L2-normalised embedding, (256,) resemblyzer or (512,) x-vector.

        Raises :class:`~vc.errors.AudioError` for audio that cannot be embedded (see
        :func:`audio_problem`; for resemblyzer also audio its VAD finds no speech in).
        """
        reason = audio_problem(wav, sr, "audio")
        if reason:
            raise AudioError(reason)
        wav = _to_16k(wav, sr)
        model = self._load()
        if self.backend == "resemblyzer":
            # volume normalisation and trimming of long pauses, as Resemblyzer was trained
            wav = _import("resemblyzer").preprocess_wav(wav)
            if wav.size < MIN_SECONDS * SAMPLE_RATE:
                raise AudioError("audio: Resemblyzer's voice activity detector found no speech")
            emb = model.embed_utterance(wav)
        else:
            emb = model.embed(wav)
        emb = np.asarray(emb, dtype=np.float32).reshape(-1)
        return emb / max(float(np.linalg.norm(emb)), 1e-12)

    def score(self, a: np.ndarray, b: np.ndarray, sr: int = SAMPLE_RATE) -> Score:
        """Cosine similarity in [-1, 1] of the embeddings of clips ``a`` and ``b`` (mono, ``sr`` Hz)."""
        reason = audio_problem(a, sr, "a") or audio_problem(b, sr, "b")
        if reason:
            return _nan(reason)
        try:
            ea, eb = self.embed(a, sr), self.embed(b, sr)
        except AudioError as err:
            return _nan(str(err))
        return Score(float(np.dot(ea, eb)))


# ---------------------------------------------------------------------------------------------
# ASR, CER and WER


class Transcriber:
    """English speech -> text for CER/WER.

    ``backend="pocketsphinx"`` (default): CMU PocketSphinx with the en-US model in its wheel
    (offline; weak, but enough to compare systems); ``model`` optionally names another acoustic
    model folder. ``backend="whisper"`` / ``"wav2vec2"``: a transformers ASR pipeline on ``model``
    (a hub id or local folder; defaults in :attr:`DEFAULT_MODELS`), loaded on first use; an
    unreachable model raises :class:`~vc.errors.MissingModelError` naming ``metrics.asr.model``.
    """

    DEFAULT_MODELS = {
        "whisper": "openai/whisper-small.en",
        # the ASR of s3prl-vc's and most VCC-style evaluations
        "wav2vec2": "facebook/wav2vec2-large-960h-lv60-self",
    }
    BACKENDS = ("pocketsphinx", "whisper", "wav2vec2")

    def __init__(self, backend: str = "pocketsphinx", model: str | None = None, device: str = "cpu"):
        if backend not in self.BACKENDS:
            raise ValueError(f"unknown ASR backend {backend!r}; use one of {self.BACKENDS}")
        self.backend, self.device = backend, device
        self.model = model or self.DEFAULT_MODELS.get(backend)
        self._engine = None

    def _load(self):
        if self._engine is None:
            if self.backend == "pocketsphinx":
                options = {"hmm": self.model} if self.model else {}
                self._engine = _import("pocketsphinx").Decoder(
                    samprate=SAMPLE_RATE, loglevel="FATAL", **options
                )
            else:
                transformers = _import("transformers")
                try:
                    self._engine = transformers.pipeline(
                        "automatic-speech-recognition",
                        model=self.model,
                        device=self.device,
                        chunk_length_s=30,
                    )
                except (OSError, ValueError) as err:  # hub unreachable, no such repo or folder
                    raise MissingModelError("ASR model", self.model, "metrics.asr.model", err) from err
        return self._engine

    def transcribe(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> str:
        """Mono float audio (T,) at ``sr`` Hz -> the recognised text ("" for silence).

        Silent audio (peak below ``vc.audio.SILENCE_PEAK``) gives "" without running the model;
        short audio is transcribed as it is; empty, NaN/Inf or not-1-D audio raises
        :class:`~vc.errors.AudioError`.
        """
        reason = audio_problem(wav, sr, "audio", speech=False)
        if reason:
            raise AudioError(reason)
        if np.abs(wav).max() < SILENCE_PEAK:
            # recognisers make words up from silence; a silent output has said nothing
            return ""
        wav = _to_16k(wav, sr)
        engine = self._load()
        if self.backend == "pocketsphinx":
            pcm = (np.clip(wav, -1.0, 1.0) * np.iinfo(np.int16).max).astype(np.int16)
            engine.start_utt()
            engine.process_raw(pcm.tobytes(), full_utt=True)
            engine.end_utt()
            hyp = engine.hyp()
            return hyp.hypstr if hyp is not None else ""
        return str(engine({"raw": wav, "sampling_rate": SAMPLE_RATE})["text"]).strip()


def normalize_text(text: str) -> str:
    """Text -> lower case, punctuation removed, whitespace collapsed; numbers stay as written.

    Apostrophes are dropped (``don't`` -> ``dont``) and other punctuation becomes a space
    (``well-known`` -> ``well known``), except ``.`` and ``,`` between digits (``3.5``, ``1,000``).
    Both sides of CER/WER go through the same function.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    out = []
    for k, ch in enumerate(text):
        if not unicodedata.category(ch).startswith("P"):
            out.append(ch)
        elif ch in "'’":
            continue
        elif ch in ".," and 0 < k < len(text) - 1 and text[k - 1].isdigit() and text[k + 1].isdigit():
            out.append(ch)
        else:
            out.append(" ")
    return " ".join("".join(out).split())


def _error_rate(kind: str, ref_text: str, hyp_text: str) -> Score:
    if not isinstance(ref_text, str) or not isinstance(hyp_text, str):
        return _nan(
            f"{kind}: expected two strings, got {type(ref_text).__name__} and {type(hyp_text).__name__}"
        )
    ref, hyp = normalize_text(ref_text), normalize_text(hyp_text)
    if not ref:
        return _nan(f"{kind}: the reference text is empty after normalisation")
    jiwer = _import("jiwer")
    return Score(float(getattr(jiwer, kind)(ref, hyp)))


def cer(ref_text: str, hyp_text: str) -> Score:
    """Character error rate (edits / reference characters, spaces included) after :func:`normalize_text`."""
    return _error_rate("cer", ref_text, hyp_text)


def wer(ref_text: str, hyp_text: str) -> Score:
    """Word error rate (edits / reference words) after :func:`normalize_text`."""
    return _error_rate("wer", ref_text, hyp_text)


# ---------------------------------------------------------------------------------------------
# DNSMOS, versions, confidence intervals


def dnsmos(wav: np.ndarray, sr: int = SAMPLE_RATE) -> dict[str, Score]:
    """DNSMOS P.835 (``speechmos``, ONNX models from its wheel) of mono float audio (T,) at ``sr`` Hz.

    Returns Scores on the 1-5 MOS scale: ``ovrl``, ``sig`` (speech), ``bak`` (background) and
    ``p808`` (the P.808 overall model). Clips shorter than 9 s are tiled to 9 s by speechmos.
    """
    reason = audio_problem(wav, sr, "audio")
    if reason:
        return {key: _nan(reason) for key in ("ovrl", "sig", "bak", "p808")}
    # speechmos rejects samples outside [-1, 1]
    wav = np.clip(_to_16k(wav, sr), -1.0, 1.0)
    out = _import("speechmos.dnsmos").run(wav, SAMPLE_RATE)
    return {key: Score(float(out[f"{key}_mos"])) for key in ("ovrl", "sig", "bak", "p808")}


def backend_versions() -> dict[str, str | None]:
    """Installed version of each metric backend package (None when it is not installed), for reports."""
    versions = {}
    for dist in _BACKENDS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def confidence_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided ``level`` confidence interval (Student's t) of ``values``, NaNs ignored.

    Returns ``(mean, low, high)``; the bounds are NaN with fewer than 2 finite values, and all three
    are NaN with none.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half
