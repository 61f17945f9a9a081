"""data=voice: one speaker's recordings -> utterances, a split by recording, converted and perturbed
sources, training, a bundle that converts into the voice without a reference."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from tests.conftest import REPO_ROOT, compose_config, smoke_overrides
from vc.audio import load_audio, write_wav
from vc.data.synthetic import _content, _render, _voice, write_synthetic_recordings
from vc.data.voice import VoiceCorpus, speech_spans, split_recordings
from vc.errors import AudioError, DataError

SR = 16000


def _env(root: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def voice_overrides(root: Path, recordings: Path, pool: Path, output: Path) -> list[str]:
    """The smoke experiment on a folder of recordings: tiny models, a small corpus, one converted voice."""
    overrides = [o for o in smoke_overrides(root, output) if not o.startswith("paths.data_dir")]
    return [
        *overrides,
        "data=voice",
        f"data.corpus.root={recordings}",
        # the fixture's corpus holds about half a minute of speech
        "data.corpus.min_speech_seconds=20",
        "data.voice.sources.convert=1",
        "data.voice.sources.perturb=1",
        f"data.voice.convert.pool={pool}",
        # the tiny random x-vector model puts every synthetic voice above 0.99 cosine of every other:
        # nothing is left out here (test_pool_leaves_out_the_target checks that part)
        "data.voice.convert.exclude_above=1.01",
        "data.voice.convert.batch_size=2",
    ]


@pytest.fixture(scope="module")
def voice(tmp_path_factory, synthetic_arctic):
    """Recordings of synthetic speaker syb (4 files, 16 and 44.1 kHz), prepared once with tiny models."""
    from vc.data.prepare import run

    root = tmp_path_factory.mktemp("voice")
    recordings = write_synthetic_recordings(
        root / "recordings", "syb", num_files=4, utterances_per_file=6, sample_rates=(16000, 44100)
    )
    pool = root / "pool"
    for spk in ("sya", "syc", "syd"):
        shutil.copytree(synthetic_arctic / f"cmu_us_{spk}_arctic", pool / spk)
    overrides = voice_overrides(root, recordings, pool, root / "prepare")
    report = run(compose_config("train", overrides))
    return SimpleNamespace(root=root, recordings=recordings, overrides=overrides, report=report)


def _datamodule(overrides: list[str]):
    from hydra.utils import instantiate

    cfg = compose_config("train", overrides)
    dm = instantiate(cfg.data, _convert_="object")
    dm.prepare_data()
    dm.setup("fit")
    return dm


# ----------------------------------------------------------------------------- utterances


def test_long_recordings_split_into_utterances(tmp_path):
    rng = np.random.default_rng(0)
    voice = _voice("syc")
    utterances = [_render(_content(7, k)[0], voice, rng, SR) for k in range(5)]
    gap = np.zeros(int(0.8 * SR), dtype=np.float32)
    recording = np.concatenate([x for u in utterances for x in (u, gap)])
    spans = speech_spans(recording, SR)
    # one piece per utterance, each inside the utterance it came from
    assert len(spans) == 5
    starts = np.cumsum([0] + [len(u) + len(gap) for u in utterances])[:-1]
    for (s, e), start, u in zip(spans, starts, utterances, strict=True):
        assert start - 0.05 * SR <= s and e <= start + len(u) + 0.15 * SR
        # trimmed: the 0.15 s of silence the synthesiser leads with is mostly gone
        assert s > start + 0.02 * SR
    # one stretch of speech with only short pauses, 25 s long: cut by the converter's splitter
    continuous = np.concatenate([x for u in utterances * 3 for x in (u, np.zeros(int(0.2 * SR), np.float32))])
    pieces = speech_spans(continuous, SR, max_seconds=10.0)
    assert len(continuous) > 20 * SR and len(pieces) >= 3
    assert all(SR <= e - s <= 10 * SR for s, e in pieces)
    assert all(a[1] <= b[0] for a, b in zip(pieces, pieces[1:]))


def test_corpus_reads_recursively_any_rate_and_names_bad_files(tmp_path):
    root = write_synthetic_recordings(
        tmp_path / "rec", num_files=3, utterances_per_file=8, sample_rates=(22050,)
    )
    nested = root / "day2" / "mic b"
    nested.mkdir(parents=True)
    shutil.move(root / "take_02.wav", nested / "take_02.wav")
    # stereo 48 kHz: channels averaged, resampled
    mono = load_audio(root / "take_00.wav", 48000)
    sf.write(nested / "stereo.flac", np.stack([mono, mono], 1), 48000)
    (root / "broken.wav").write_bytes(b"RIFF not really")
    write_wav(root / "silent.wav", np.zeros(SR * 3, np.float32))
    found = VoiceCorpus(root, tmp_path / "cache", min_speech_seconds=30).load()
    assert found.recordings == 4
    assert dict(found.sample_rates) == {22050: 3, 48000: 1}
    assert {u.recording for u in found.utterances} == {
        "take_00.wav",
        "take_01.wav",
        "day2/mic b/take_02.wav",
        "day2/mic b/stereo.flac",
    }
    assert all(SR <= load_audio(u.path).size <= 10 * SR for u in found.utterances)
    reasons = {Path(b.path).name: b.reason for b in found.bad_files}
    assert set(reasons) == {"broken.wav", "silent.wav"}
    assert "not a readable audio file" in reasons["broken.wav"] and "silent" in reasons["silent.wav"]
    with pytest.raises(AudioError, match="broken.wav"):
        VoiceCorpus(root, tmp_path / "cache", min_speech_seconds=30, on_bad_file="error").load()


def test_transcripts_csv_gives_text_to_single_utterance_recordings(tmp_path):
    root = write_synthetic_recordings(tmp_path / "rec", num_files=2, utterances_per_file=1)
    write_synthetic_recordings(tmp_path / "long", num_files=1, utterances_per_file=4)
    shutil.copy(tmp_path / "long" / "take_00.wav", root / "long.wav")
    (root / "transcripts.csv").write_text("path,text\ntake_00.wav,Hello there.\nlong.wav,Many words.\n")
    found = VoiceCorpus(root, tmp_path / "cache", min_speech_seconds=1).load()
    texts = {u.utt_id: u.text for u in found.utterances}
    assert texts["take_00-000"] == "Hello there."
    # a recording cut into several utterances keeps no text: the CSV does not say which words fall where
    assert {t for k, t in texts.items() if k.startswith("long")} == {""}


def test_held_out_split_never_shares_a_recording(tmp_path):
    root = write_synthetic_recordings(tmp_path / "rec", num_files=10, utterances_per_file=3)
    utterances = VoiceCorpus(root, tmp_path / "cache", min_speech_seconds=1).load().utterances
    parts = split_recordings(utterances, seed=3, val_ratio=0.2, test_ratio=0.1)
    by_part = {name: {u.recording for u in part} for name, part in parts.items()}
    assert len(by_part["val"]) == 2 and len(by_part["test"]) == 1 and len(by_part["train"]) == 7
    assert not (by_part["train"] & by_part["val"]) and not (by_part["train"] & by_part["test"])
    assert not (by_part["val"] & by_part["test"])
    assert sum(len(p) for p in parts.values()) == len(utterances)
    # seeded: the same seed gives the same split whatever the input order, another seed another one
    assert split_recordings(utterances[::-1], seed=3, val_ratio=0.2, test_ratio=0.1) == parts
    assert split_recordings(utterances, seed=4, val_ratio=0.2, test_ratio=0.1) != parts


# ---------------------------------------------------------------------------- bad input


def test_bad_folders_give_one_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"data.corpus.root=.*nowhere: no such folder"):
        VoiceCorpus(tmp_path / "nowhere", tmp_path / "cache").load()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    with pytest.raises(DataError, match=r"empty: no audio files below it"):
        VoiceCorpus(tmp_path / "empty", tmp_path / "cache").load()
    silent = tmp_path / "silent"
    write_wav(silent / "a.wav", np.zeros(SR * 5, np.float32))
    # noise only, 60 dB down: readable and not silent, but no speech
    write_wav(silent / "b.wav", 1e-3 * np.random.default_rng(0).standard_normal(SR * 5).astype(np.float32))
    with pytest.raises(DataError, match=r"none of its 2 audio file\(s\) holds usable speech"):
        VoiceCorpus(silent, tmp_path / "cache").load()
    short = write_synthetic_recordings(tmp_path / "short", num_files=2, utterances_per_file=4)
    with pytest.raises(DataError, match=r"only \d+ s of usable speech in 2 recording\(s\).*at least 60 s"):
        VoiceCorpus(short, tmp_path / "cache").load()


def test_low_sample_rate_is_named(tmp_path, caplog):
    root = write_synthetic_recordings(
        tmp_path / "rec", num_files=2, utterances_per_file=6, sample_rates=(8000, 16000)
    )
    found = VoiceCorpus(root, tmp_path / "cache", min_speech_seconds=10).load()
    assert dict(found.sample_rates) == {8000: 1, 16000: 1}
    assert "sampled below 16000 Hz (8000 Hz)" in caplog.text and "muffled" in caplog.text


def test_cli_error_is_one_line_and_exit_2(tmp_path):
    short = write_synthetic_recordings(tmp_path / "short", num_files=1, utterances_per_file=3)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vc.data.prepare",
            "experiment=smoke",
            "data=voice",
            f"data.corpus.root={short}",
            f"paths.cache_dir={tmp_path}/cache",
            f"hydra.run.dir={tmp_path}/out",
        ],
        cwd=REPO_ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "usable speech" in errors[0] and str(short) in errors[0]
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------- perturbation


def _envelope(wav: np.ndarray) -> np.ndarray:
    import pyworld

    x = wav.astype(np.float64)
    f0, t = pyworld.harvest(x, SR, f0_floor=60, f0_ceil=600)
    return np.log(pyworld.cheaptrick(x, f0, t, SR)[f0 > 0]).mean(0)


def _median_f0(wav: np.ndarray) -> float:
    import pyworld

    f0, _ = pyworld.harvest(wav.astype(np.float64), SR, f0_floor=60, f0_ceil=600)
    return float(np.median(f0[f0 > 0]))


def _formant_warp(before: np.ndarray, after: np.ndarray) -> float:
    """The frequency scale that best maps the mean WORLD envelope of ``before`` onto that of ``after``."""
    freqs = np.linspace(0, SR / 2, len(before))
    band = (freqs > 200) & (freqs < 4000)
    scales = np.linspace(0.7, 1.4, 701)
    errors = [np.mean((after[band] - np.interp(freqs[band] / a, freqs, before))[:] ** 2) for a in scales]
    return float(scales[int(np.argmin(errors))])


@pytest.mark.parametrize(("pitch", "formant"), [(1.3, 1.0), (0.8, 1.15), (1.0, 0.88), (1.2, 1.1)])
def test_perturbation_shifts_pitch_and_formants_as_asked(pitch, formant):
    from vc.data.perturb import change_voice

    rng = np.random.default_rng(1)
    wav = np.concatenate([_render(_content(0, k)[0], _voice("syc"), rng, SR) for k in (3, 4)])
    out = change_voice(wav, SR, pitch, formant)
    assert abs(len(out) / len(wav) - 1) < 0.02
    assert _median_f0(out) / _median_f0(wav) == pytest.approx(pitch, rel=0.03)
    assert _formant_warp(_envelope(wav), _envelope(out)) == pytest.approx(formant, rel=0.04)


def test_perturbation_is_new_each_epoch_and_repeatable():
    from vc.data.perturb import PerturbSettings, perturb, perturb_rng

    wav = _render(_content(0, 1)[0], _voice("syb"), np.random.default_rng(0), SR)
    settings = PerturbSettings()
    a, pa = perturb(wav, SR, perturb_rng(42, 0, "u~pt0"), settings)
    b, pb = perturb(wav, SR, perturb_rng(42, 0, "u~pt0"), settings)
    c, pc = perturb(wav, SR, perturb_rng(42, 1, "u~pt0"), settings)
    assert np.array_equal(a, b) and pa == pb
    assert pc != pa and not np.allclose(a[: len(c)], c[: len(a)])
    assert len(a) == len(wav) and np.abs(a).max() == pytest.approx(np.abs(wav).max(), rel=1e-5)
    lo, hi = settings.pitch
    assert lo <= pa["pitch"] <= hi and len(pa["eq"]) == settings.eq_bands


# -------------------------------------------------------------------- the prepared corpus


def test_report_and_pairs(voice):
    report = voice.report
    assert re.search(
        r"speech +0\.\d min usable in 4 recording\(s\); sample rates 16000 Hz x2, 44100 Hz x2", report
    )
    assert re.search(r"utterances +train \d+, val \d+, test \d+", report)
    assert "sources       convert 1 per utterance, perturb 1 per utterance" in report
    assert re.search(r"convert +\d+ converted sources in 3 voice\(s\) \(sya, syc, syd\)", report)
    assert "warning       only 0." in report


def test_convert_cache_is_built_once(voice):
    """The fixture converted every utterance; preparing again converts nothing and loads no model."""
    from vc.data.prepare import run

    n = int(re.search(r"convert +(\d+) converted sources", voice.report).group(1))
    assert re.search(rf"0 cache hits, {n} converted now, 0 dropped", voice.report)
    again = run(compose_config("train", voice.overrides))
    assert re.search(rf"{n} cache hits, 0 converted now, 0 dropped", again)
    assert "features      cache hit" in again


def test_pairs_per_epoch_and_perturbed_sources_change_with_the_epoch(voice):
    dm = _datamodule(voice.overrides)
    train = dm.datasets["train"]
    ids = train.utt_ids
    assert {i.split("~")[1][:2] for i in ids} == {"cv", "pt"}
    assert sum("~pt" in i for i in ids) == sum("~cv" in i for i in ids) == len(dm.utterances["train"])
    k = next(i for i, u in enumerate(ids) if "~pt" in u)
    n = len(train)
    first, again, later = train[k]["input_values"], train[k]["input_values"], train[n + k]["input_values"]
    assert np.array_equal(first, again) and not np.array_equal(first[:1000], later[:1000])
    # validation sources stay the same from epoch to epoch
    val = dm.datasets["val"]
    j = next(i for i, u in enumerate(val.utt_ids) if "~pt" in u)
    assert np.array_equal(val[j]["input_values"], val[len(val) + j]["input_values"])
    # the sampler tells the dataset the epoch through the index
    sampler = dm._sampler(train, shuffle=True)
    sampler.set_epoch(2)
    assert all(2 * n <= i < 3 * n for batch in sampler for i in batch)
    held = {u.recording for u in dm.utterances["val"] + dm.utterances["test"]}
    assert not held & {u.recording for u in dm.utterances["train"]}


def test_pool_leaves_out_the_target(voice, tmp_path):
    from vc.data.voice_sources import ConvertedSources

    dm = _datamodule(voice.overrides)
    train = dm.utterances["train"]
    pool = tmp_path / "pool"
    shutil.copytree(voice.root / "pool" / "sya", pool / "sya")
    (pool / "me").mkdir()
    for u in train:
        shutil.copy(u.path, pool / "me" / f"{u.utt_id}.wav")
    # a voice given as its x-vector
    np.save(pool / "extra.npy", np.random.default_rng(0).standard_normal(512).astype(np.float32))
    sources = ConvertedSources(
        1, dm.speaker_cfg, 0, ckpt="unused", cache_dir=tmp_path / "c", pool=str(pool), exclude_above=0.99999
    )
    voices = sources._voices(train)
    assert set(voices) == {"sya", "extra"} and sources.excluded == ["me"]
    assert all(abs(np.linalg.norm(v) - 1) < 1e-5 for v in voices.values())


@pytest.mark.slow
def test_convert_survives_a_kill_and_continues(voice, tmp_path):
    """A prepare killed during conversion keeps what it made; the next run converts only the rest."""
    from vc.data.prepare import run

    cache = tmp_path / "convert"
    overrides = [
        *voice.overrides,
        f"data.voice.convert.cache_dir={cache}",
        "data.voice.convert.batch_size=1",
        "data.voice.sources.convert=2",
    ]
    cli = [o.replace("paths.output_dir=", "hydra.run.dir=") for o in overrides]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vc.data.prepare", *cli],
        cwd=REPO_ROOT,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(cache.rglob("*.json")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = len(list(cache.rglob("*.json")))
    report = run(compose_config("train", overrides))
    total = int(re.search(r"(\d+) cache hits, (\d+) converted now", report).group(1)) + int(
        re.search(r"(\d+) cache hits, (\d+) converted now", report).group(2)
    )
    assert 0 < done < total
    assert f"{done} cache hits, {total - done} converted now" in report
    assert f"{total} cache hits, 0 converted now" in run(compose_config("train", overrides))


# ----------------------------------------------------------------------- train and convert


@pytest.mark.slow
def test_train_end_to_end_and_bundle_converts_without_ref(voice, tmp_path):
    from vc.converter import VoiceConverter

    out = tmp_path / "run"
    cli = [o.replace("paths.output_dir=", "hydra.run.dir=") for o in voice.overrides]
    cli = [o if not o.startswith("hydra.run.dir=") else f"hydra.run.dir={out}" for o in cli]
    proc = subprocess.run(
        [sys.executable, "train.py", *cli, "trainer.max_steps=4", "trainer.val_check_interval=2"],
        cwd=REPO_ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "utterances    train" in proc.stderr + proc.stdout
    bundle = out / "bundle"
    # the bundle's default speaker is the target's mean x-vector over its training utterances
    dm = _datamodule(voice.overrides)
    train = dm.datasets["train"]
    mean = np.mean([train.embeddings[u] for u in train.utt_ids], 0)
    assert np.allclose(
        np.load(bundle / "default_speaker.npy").reshape(-1), mean / np.linalg.norm(mean), atol=1e-5
    )
    src = next(voice.recordings.glob("*.wav"))
    converted = VoiceConverter.from_pretrained(bundle, device="cpu").convert(src)
    assert converted.wav.size > 0 and np.isfinite(converted.wav).all()
    infer = subprocess.run(
        [
            sys.executable,
            "infer.py",
            f"ckpt={bundle}",
            f"src={src}",
            f"out={tmp_path}/no_ref.wav",
            f"hydra.run.dir={tmp_path}/infer",
        ],
        cwd=REPO_ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert infer.returncode == 0, infer.stderr[-2000:]
    assert load_audio(tmp_path / "no_ref.wav").size > 0
    # eval.py on the trained bundle: the pretrained rows come from the model.pretrained train.py recorded
    evaluated = subprocess.run(
        [
            sys.executable,
            "eval.py",
            f"ckpt={bundle}",
            *voice_eval_overrides(voice),
            "metrics.run=[mcd]",
            "max_utterances=1",
            f"hydra.run.dir={tmp_path}/eval",
        ],
        cwd=REPO_ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    table = (tmp_path / "eval" / "table.md").read_text()
    assert "| convert->recordings | pretrained (no fine-tune) |" in table
    assert "| perturb->recordings | converted |" in table


# ----------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def voice_bundle(voice, tiny_bundle, tmp_path_factory) -> Path:
    """The tiny bundle, recording the fixture's data=voice training config (model.pretrained: the tiny
    SpeechT5 of the fixture's cache, which made the converted sources)."""
    from omegaconf import OmegaConf

    from vc.model.bundle import BUNDLE_FILE

    out = tmp_path_factory.mktemp("voice_bundle") / "bundle"
    shutil.copytree(tiny_bundle, out)
    settings = OmegaConf.load(out / BUNDLE_FILE)
    settings.train_config = OmegaConf.to_container(compose_config("train", voice.overrides), resolve=True)
    OmegaConf.save(settings, out / BUNDLE_FILE)
    return out


def voice_eval_overrides(voice) -> list[str]:
    """eval.py's overrides for the fixture's corpus: the training run's data settings, tiny models."""
    tiny = voice.root / "cache" / "tiny"
    data = [o for o in voice.overrides if o.startswith(("data", "paths.cache_dir"))]
    return [*data, f"tiny_models={tiny}", f"data.speaker.source={tiny}/spkrec-xvect", "device=cpu"]


def test_eval_scores_held_out_recordings_against_their_sources(voice, voice_bundle, loud_vocoder, tmp_path):
    """`python eval.py data=voice`: every held-out utterance is the reference of its convert and perturb
    sources, scored for the bundle and for the pretrained model it started from, in one table."""
    import csv
    import json
    import math

    from vc.model.bundle import BUNDLE_FILE

    run_dir = tmp_path / "eval"
    others = tmp_path / "others"
    for k, wav in enumerate(sorted((voice.root / "pool" / "sya").rglob("*.wav"))[:2]):
        write_wav(others / "sya" / f"{k}.wav", load_audio(wav))
    args = [
        f"ckpt={voice_bundle}",
        *voice_eval_overrides(voice),
        f"vocoder={loud_vocoder}",
        "generation.threshold=3",
        "generation.maxlenratio=1.0",
        "metrics.run=[mcd,f0,secs]",
        "max_utterances=2",
        f"eval.sources={others}",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.run(
        [sys.executable, "eval.py", *args],
        cwd=REPO_ROOT,
        env={**_env(tmp_path), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    dm = _datamodule(voice.overrides)
    held = dm.utterances["test"][:2]
    with open(run_dir / "utterances.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    systems = ("source", "pretrained", "converted", "target")
    ids = {f"{u.utt_id}~{kind}0" for u in held for kind in ("cv", "pt")}
    # both kinds of source of each held-out utterance, each as four systems (no conversion was dropped here)
    # and other speakers' recordings (eval.sources), with no reference to be the target
    other_ids = {"other-sya__0", "other-sya__1"}
    expected = {(i, s) for i in ids for s in systems} | {(i, s) for i in other_ids for s in systems[:3]}
    assert {(r["utt_id"], r["system"]) for r in rows} == expected
    assert {r["pair"] for r in rows} == {"convert->recordings", "perturb->recordings", "other->recordings"}
    for r in rows:
        assert math.isfinite(float(r["secs"])), r
        if r["pair"] == "other->recordings":  # no recording of the same words: no MCD
            assert r["mcd"] == "nan" and r["mcd_reason"].startswith("n/a: another speaker's recording")
        elif r["system"] == "target":  # the original against itself
            assert r["mcd"] == "nan" and r["mcd_reason"].startswith("n/a")
        else:
            assert math.isfinite(float(r["mcd"])) and float(r["mcd"]) > 0, r
    # the sources are the ones training made: the cached conversions and epoch 0's perturbation
    for u in held:
        wav = load_audio(u.path)
        written = load_audio(run_dir / "sources" / f"{u.utt_id}~pt0.wav")
        # equal up to the 16-bit WAV's rounding
        assert np.allclose(written, dm.perturbed(wav, f"{u.utt_id}~pt0"), atol=2**-15, rtol=0)
        for system in ("converted", "pretrained"):
            for name in (f"{u.utt_id}~cv0", f"{u.utt_id}~pt0", *other_ids):
                assert load_audio(run_dir / system / f"{name}.wav").size > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    trained = OmegaConf.load(voice_bundle / BUNDLE_FILE).train_config
    assert summary["pretrained"] == trained.model.pretrained
    assert summary["data"]["train_overlap"] == {"train": 0, "scored": 2}
    assert summary["data"]["sources"] == {"convert": 2, "perturb": 2}
    assert summary["data"]["other_sources"] == 2
    assert set(summary["results"]["convert->recordings"]) == set(systems)
    table = (run_dir / "table.md").read_text()
    assert "| perturb->recordings | pretrained (no fine-tune) |" in table
    assert f"Pretrained: {trained.model.pretrained} without fine-tune" in table
    # a model without a training record needs eval.pretrained: one line, exit 2
    bare = subprocess.run(
        [sys.executable, "eval.py", *args[1:], f"ckpt={voice.root}/cache/tiny/speecht5_vc"],
        cwd=REPO_ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bare.returncode == 2 and "Traceback" not in bare.stderr
    assert "records no model.pretrained" in bare.stderr and "eval.pretrained" in bare.stderr


def test_eval_without_text_scores_cer_against_the_transcript_of_the_original(
    voice, voice_bundle, loud_vocoder, tmp_path
):
    import csv

    from vc import metrics as M
    from vc.evaluate import run
    from vc.evaluate_voice import OWN_TRANSCRIPT

    overrides = [
        f"ckpt={voice_bundle}",
        *voice_eval_overrides(voice),
        f"vocoder={loud_vocoder}",
        "generation.threshold=3",
        "generation.maxlenratio=1.0",
        "metrics.run=[asr]",
        "max_utterances=1",
        "data.voice.sources.convert=0",
        "references.pretrained=false",
        f"paths.output_dir={tmp_path}",
    ]
    summary = run(compose_config("eval", overrides))
    original = _datamodule(voice.overrides).utterances["test"][0]
    assert not original.text  # the fixture's recordings have no transcripts
    expected = M.Transcriber("pocketsphinx", None).transcribe(load_audio(original.path))
    assert expected and summary["data"]["text_from_asr"] == 1
    with open(tmp_path / "utterances.csv", newline="") as f:
        rows = {r["system"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"source", "converted", "target"}
    assert {r["text"] for r in rows.values()} == {expected}
    for system in ("source", "converted"):
        assert float(rows[system]["cer"]) > 0 and not rows[system]["cer_reason"]
    # the original against its own transcript would be 0 by construction
    assert rows["target"]["cer"] == "nan" and rows["target"]["cer_reason"] == OWN_TRANSCRIPT
