"""An offline parallel corpus in the ARCTIC layout, for tests and smoke runs.

Each synthetic speaker has its own pitch (90-260 Hz), vocal-tract length (formant scale),
spectral tilt, breathiness and speaking rate. Utterance k "says" the same thing for every
speaker: the same syllables (vowel formant targets reached from a consonant-like locus), the
same word grouping, pauses and intonation. A source-filter synthesiser renders it: a
sawtooth glottal source, a one-pole tilt filter and three formant resonators whose
frequencies move every 10 ms.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from vc.audio import write_wav
from vc.data.arctic import folder_name, pair_speakers
from vc.data.corpus import PairingResult
from vc.errors import ConfigError

DEFAULT_SPEAKERS = ("sya", "syb", "syc", "syd")
MARKER = "synthetic_corpus.json"
# bump when the synthesis changes, so that corpora written by older code are rewritten
VERSION = 1
PEAK = 10 ** (-3 / 20)
NOISE_FLOOR = 10 ** (-70 / 20)
FRAME_RATE = 100  # formant, pitch and loudness targets per second

# Peterson & Barney (1952): mean F1, F2, F3 (Hz) of adult male vowels i, I, E, ae, a, o, U, u, V.
VOWELS = np.array(
    [
        [270, 2290, 3010],
        [390, 1990, 2550],
        [530, 1840, 2480],
        [660, 1720, 2410],
        [730, 1090, 2440],
        [570, 840, 2410],
        [440, 1020, 2240],
        [300, 870, 2240],
        [640, 1190, 2390],
    ],
    dtype=np.float64,
)
# Where F2 starts after a labial, alveolar or velar closure (F1 starts low after any of them).
F2_LOCI = np.array([900.0, 1700.0, 2300.0])
BANDWIDTHS = np.array([70.0, 100.0, 140.0])

# Prompt vocabulary: "<Det> <adj> <noun> <verb> <prep> the <adj> <place>."
DETERMINERS = "The A That One Every".split()
ADJECTIVES = "old quiet young tired clever silent eager gentle stubborn lonely".split()
NOUNS = "sailor captain doctor farmer stranger painter soldier teacher hunter writer".split()
VERBS = "waited slept worked listened wandered paused smiled lingered watched rested".split()
PREPOSITIONS = "near beside behind under across outside beyond within".split()
PLACES = "harbor river bridge forest station village garden market tower valley".split()


@dataclass(frozen=True)
class _Voice:
    f0: float  # Hz, at the start of an utterance
    formant_scale: float  # > 1: a shorter vocal tract
    tilt: float  # pole of the one-pole low-pass on the source; larger is duller
    breath: float  # aspiration noise relative to the source
    rate: float  # > 1 speaks faster


@dataclass(frozen=True)
class _Syllable:
    vowel: int
    locus: int
    seconds: float
    accent: float  # pitch multiplier
    pause_after: float  # seconds of silence after it; 0 inside a word


# Hand-placed so that the default pair (sya -> syb) goes from a low, dark voice to a high, bright one.
VOICES = {
    "sya": _Voice(f0=95.0, formant_scale=0.92, tilt=0.75, breath=0.03, rate=0.95),
    "syb": _Voice(f0=235.0, formant_scale=1.15, tilt=0.4, breath=0.06, rate=1.05),
    "syc": _Voice(f0=130.0, formant_scale=0.98, tilt=0.55, breath=0.05, rate=1.1),
    "syd": _Voice(f0=185.0, formant_scale=1.08, tilt=0.65, breath=0.04, rate=0.9),
}


def _voice(spk: str) -> _Voice:
    """Speaker name -> voice. A name always sounds the same, whichever other speakers are written."""
    if spk in VOICES:
        return VOICES[spk]
    rng = np.random.default_rng(zlib.crc32(spk.encode()))
    # a longer vocal tract goes with a lower voice
    pos = float(rng.uniform())
    return _Voice(
        f0=90.0 + 170.0 * pos,
        formant_scale=0.92 + 0.24 * pos,
        tilt=float(rng.uniform(0.3, 0.8)),
        breath=float(rng.uniform(0.02, 0.08)),
        rate=float(rng.uniform(0.9, 1.1)),
    )


def _content(seed: int, k: int) -> tuple[list[_Syllable], str]:
    """Utterance ``k``'s syllables (3-8, in words of 1-3) and its prompt text; the same for all speakers."""
    rng = np.random.default_rng([seed, k])
    n_syllables = int(rng.integers(3, 9))
    syllables = []
    left_in_word = int(rng.integers(1, 4))
    for i in range(n_syllables):
        left_in_word -= 1
        word_ends = left_in_word == 0 or i == n_syllables - 1
        syllables.append(
            _Syllable(
                vowel=int(rng.integers(len(VOWELS))),
                locus=int(rng.integers(len(F2_LOCI))),
                seconds=float(rng.uniform(0.14, 0.26)),
                accent=float(rng.uniform(0.95, 1.15)),
                pause_after=float(rng.uniform(0.06, 0.16)) if word_ends and i < n_syllables - 1 else 0.0,
            )
        )
        if left_in_word == 0:
            left_in_word = int(rng.integers(1, 4))
    # stretch so every utterance lasts 1-3 s at any speaking rate in 0.9-1.1 (with 0.35 s of edges)
    spoken = sum(s.seconds + s.pause_after for s in syllables)
    stretch = float(np.clip(spoken, 0.8, 2.2)) / spoken
    syllables = [
        _Syllable(s.vowel, s.locus, s.seconds * stretch, s.accent, s.pause_after * stretch) for s in syllables
    ]
    words = (DETERMINERS, ADJECTIVES, NOUNS, VERBS, PREPOSITIONS, ["the"], ADJECTIVES, PLACES)
    text = " ".join(str(rng.choice(choices)) for choices in words) + "."
    return syllables, text


def _tracks(syllables: list[_Syllable], voice: _Voice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame-rate targets: f0 (Hz), formants (frames, 3) in Hz and loudness in [0, 1]."""
    f0, formants, loudness = [], [], []

    def hold(seconds: float) -> None:
        m = max(1, round(seconds / voice.rate * FRAME_RATE))
        f0.append(np.full(m, f0[-1][-1] if f0 else voice.f0))
        formants.append(np.repeat(formants[-1][-1:] if formants else VOWELS[4:5] * voice.formant_scale, m, 0))
        loudness.append(np.zeros(m))

    hold(0.15)
    total = sum(s.seconds for s in syllables)
    elapsed = 0.0
    for s in syllables:
        m = max(4, round(s.seconds / voice.rate * FRAME_RATE))
        t = np.linspace(0.0, 1.0, m)
        # declination over the utterance, a small fall inside each syllable
        progress = (elapsed + t * s.seconds) / total
        f0.append(voice.f0 * s.accent * (1.1 - 0.2 * progress) * (1.0 - 0.05 * t))
        onset = np.array([250.0, F2_LOCI[s.locus], 2500.0])
        glide = np.clip(t / 0.35, 0.0, 1.0)[:, None]
        formants.append((onset + glide * (VOWELS[s.vowel] - onset)) * voice.formant_scale)
        loudness.append(np.clip(np.minimum(t / 0.15, (1.0 - t) / 0.2), 0.0, 1.0) ** 0.5)
        elapsed += s.seconds
        if s.pause_after:
            hold(s.pause_after)
    hold(0.2)
    return np.concatenate(f0), np.concatenate(formants), np.concatenate(loudness)


def _render(
    syllables: list[_Syllable], voice: _Voice, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """Synthesise one utterance -> float32 samples at ``sample_rate``, peak at -3 dBFS."""
    f0, formants, loudness = _tracks(syllables, voice)
    hop = sample_rate // FRAME_RATE
    n = len(f0) * hop
    frame_times = (np.arange(len(f0)) + 0.5) * hop
    samples = np.arange(n)
    phase = np.cumsum(np.interp(samples, frame_times, f0) / sample_rate)
    source = 2.0 * (phase % 1.0) - 1.0 + voice.breath * rng.standard_normal(n)
    source = lfilter(
        [1.0 - voice.tilt], [1.0, -voice.tilt], source * np.interp(samples, frame_times, loudness)
    )

    # one 6th-order all-pole filter per frame: the product of three unity-DC-gain resonators
    r = np.exp(-np.pi * BANDWIDTHS * voice.formant_scale / sample_rate)  # (3,)
    cos = np.cos(2 * np.pi * np.minimum(formants, 0.45 * sample_rate) / sample_rate)  # (frames, 3)
    polys = np.stack([np.ones_like(cos), -2 * r * cos, np.broadcast_to(r**2, cos.shape)], axis=-1)
    gains = polys.sum(axis=-1).prod(axis=-1)
    out = np.empty(n)
    state = np.zeros(6)
    for i in range(len(f0)):
        a = np.convolve(np.convolve(polys[i, 0], polys[i, 1]), polys[i, 2])
        out[i * hop : (i + 1) * hop], state = lfilter(
            [gains[i]], a, source[i * hop : (i + 1) * hop], zi=state
        )
    out = out / np.abs(out).max() * PEAK
    return (out + NOISE_FLOOR * rng.standard_normal(n)).astype(np.float32)


def write_synthetic_arctic(
    root: str | os.PathLike,
    speakers: tuple[str, ...] | list[str] = DEFAULT_SPEAKERS,
    num_utterances: int = 24,
    seed: int = 0,
    sample_rate: int = 16000,
) -> Path:
    """Write a parallel corpus in the ARCTIC layout under ``root``; returns ``root``.

    For each speaker: ``root/cmu_us_<spk>_arctic/wav/arctic_a0001.wav ...`` (16-bit PCM mono at
    ``sample_rate``, 1-3 s, peak -3 dBFS) and ``etc/txt.done.data`` with the prompts. The same
    arguments give the same files. A marker file records them; if it matches, nothing is written.
    """
    if num_utterances < 1:
        raise ConfigError(
            f"num_utterances={num_utterances}: the synthetic corpus needs at least one utterance "
            "(data.corpus.num_utterances)."
        )
    root = Path(root)
    speakers = tuple(speakers)
    params = {
        "version": VERSION,
        "speakers": list(speakers),
        "num_utterances": num_utterances,
        "seed": seed,
        "sample_rate": sample_rate,
    }
    marker = root / MARKER
    if marker.is_file():
        old = json.loads(marker.read_text())
        if old == params:
            return root
        for spk in old.get("speakers", []):
            shutil.rmtree(root / folder_name(spk), ignore_errors=True)
        marker.unlink()

    contents = [_content(seed, k) for k in range(num_utterances)]
    ids = [f"arctic_a{k + 1:04d}" for k in range(num_utterances)]
    for spk in speakers:
        voice = _voice(spk)
        folder = root / folder_name(spk)
        shutil.rmtree(folder, ignore_errors=True)
        rng = np.random.default_rng([seed, zlib.crc32(spk.encode()), 1])
        for utt, (syllables, _) in zip(ids, contents, strict=True):
            write_wav(folder / "wav" / f"{utt}.wav", _render(syllables, voice, rng, sample_rate), sample_rate)
        (folder / "etc").mkdir(parents=True)
        prompts = "".join(f'( {utt} "{text}" )\n' for utt, (_, text) in zip(ids, contents, strict=True))
        (folder / "etc" / "txt.done.data").write_text(prompts, encoding="utf-8")
    # written last: a run cut short leaves no marker, so the next call starts again
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(params, indent=2))
    os.replace(tmp, marker)
    return root


class SyntheticCorpus:
    """A synthetic ARCTIC-layout corpus under ``root``, written on first ``prepare()``.

    ``speakers`` (default :data:`DEFAULT_SPEAKERS`) are written, plus ``src_spk`` and ``tgt_spk``
    if they are not among them; ``load()`` pairs the two like :class:`vc.data.arctic.ArcticCorpus`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        src_spk: str,
        tgt_spk: str,
        num_utterances: int = 24,
        seed: int = 0,
        speakers: tuple[str, ...] | list[str] | None = None,
    ):
        self.root = Path(root)
        self.src_spk, self.tgt_spk = src_spk, tgt_spk
        self.num_utterances, self.seed = num_utterances, seed
        self.speakers = tuple(dict.fromkeys((*(speakers or DEFAULT_SPEAKERS), src_spk, tgt_spk)))
        self.name = f"synthetic {src_spk}->{tgt_spk}"

    def prepare(self) -> None:
        """Write the corpus unless the same one is already there (rank 0, idempotent)."""
        write_synthetic_arctic(self.root, self.speakers, self.num_utterances, self.seed)

    def load(self) -> PairingResult:
        """Pair the source and target speakers by utterance id."""
        return pair_speakers(self.root, self.src_spk, self.tgt_spk)


def write_synthetic_recordings(
    root: str | os.PathLike,
    speaker: str = "syb",
    num_files: int = 6,
    utterances_per_file: int = 8,
    seed: int = 0,
    sample_rates: tuple[int, ...] = (16000,),
    pause_seconds: tuple[float, float] = (0.5, 1.0),
) -> Path:
    """Write one synthetic speaker's "recordings" for ``data=voice``: ``root/take_<k>.wav``; returns ``root``.

    Each file strings ``utterances_per_file`` synthetic utterances (1-3 s each) together with pauses
    drawn from ``pause_seconds``, like a long recording. File ``k`` is written at
    ``sample_rates[k % len(sample_rates)]``. The same arguments give the same files.
    """
    root = Path(root)
    voice = _voice(speaker)
    rng = np.random.default_rng([seed, zlib.crc32(speaker.encode()), 2])
    for k in range(num_files):
        sr = sample_rates[k % len(sample_rates)]
        parts = []
        for j in range(utterances_per_file):
            syllables, _ = _content(seed + 1000, k * utterances_per_file + j)
            parts += [
                _render(syllables, voice, rng, sr),
                NOISE_FLOOR * rng.standard_normal(int(rng.uniform(*pause_seconds) * sr)).astype(np.float32),
            ]
        write_wav(root / f"take_{k:02d}.wav", np.concatenate(parts), sr)
    return root
