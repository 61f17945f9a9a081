"""infer.py on the tiny bundle: files, folders and globs in, 16 kHz mono WAVs out; bad input reported.

Most tests compose conf/infer.yaml with Hydra's compose API and call vc.infer.run, as infer.py
does; two run the real script in a subprocess for the exit status and the absence of a traceback.
Generation uses threshold 3 (never reached by the random model; see tests/test_converter.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from vc.audio import load_audio, resample
from vc.errors import AudioError, ConfigError, VCError
from vc.infer import run

ROOT = Path(__file__).resolve().parents[1]
SR = 16_000
HOP = 256


# one torch thread: the cores may be shared (generation ran ~60x slower with 2 threads on 2 busy cores)
pytestmark = pytest.mark.usefixtures("one_thread")


def config(**overrides):
    """conf/infer.yaml with ``key=value`` overrides (values quoted for Hydra's parser)."""
    args = {"generation.threshold": 3.0, "device": "cpu", **overrides}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("infer", overrides=[f"{k}={_quote(v)}" for k, v in args.items()])


def _quote(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return "'" + str(value).replace("'", "\\'") + "'"


def frame_limit(samples: int, maxlenratio: float = 2.0, r: int = 2) -> int:
    """Frames generate_speech allows a chunk of ``samples`` at 16 kHz (the encoder downsamples 320x)."""
    return max(1, int(((samples - 400) // 320 + 1) * maxlenratio / r)) * r


@pytest.fixture(scope="module")
def utterances(synthetic_arctic) -> list[Path]:
    return sorted((synthetic_arctic / "cmu_us_sya_arctic" / "wav").glob("*.wav"))


@pytest.fixture(scope="module")
def ref(synthetic_arctic) -> Path:
    return synthetic_arctic / "cmu_us_syb_arctic" / "wav" / "arctic_a0001.wav"


def write_stereo_44k_flac(src: Path, dest: Path) -> Path:
    """``src`` (16 kHz mono) as a 44.1 kHz stereo FLAC, the channels at different gains."""
    wav = resample(sf.read(str(src), dtype="float32")[0], SR, 44_100)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(dest), np.stack([wav, 0.5 * wav], axis=1), 44_100, format="FLAC")
    return dest


def test_folder_is_converted_with_the_tree_mirrored(tiny_bundle, utterances, ref, tmp_path, caplog):
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    shutil.copy(utterances[0], src / "top.wav")
    shutil.copy(utterances[1], src / "a" / "x.wav")
    write_stereo_44k_flac(utterances[2], src / "a" / "b" / "y.flac")
    data, rate = sf.read(str(utterances[3]))
    sf.write(str(src / "a" / "z.ogg"), data, rate, format="OGG")
    sf.write(str(src / "a" / "b" / "w.mp3"), data, rate, format="MP3")
    (src / "a" / "notes.txt").write_text("not audio, and not picked up")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="vc.infer"):
        summary = run(config(ckpt=tiny_bundle, src=src, ref=ref, out=out))
    expected = {"top.wav", "a/x.wav", "a/b/y.wav", "a/z.wav", "a/b/w.wav"}
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == expected
    assert summary["converted"] == 5 and summary["skipped"] == summary["failed"] == 0
    for name in expected:
        info = sf.info(str(out / name))
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    assert any(
        r.message.startswith("converted 5 files (") and "real-time factor" in r.message
        for r in caplog.records
    )
    # a second run skips what exists; overwrite=true converts again
    assert run(config(ckpt=tiny_bundle, src=src, ref=ref, out=out))["skipped"] == 5
    again = run(config(ckpt=tiny_bundle, src=src, ref=ref, out=out, overwrite=True))
    assert again["converted"] == 5 and again["skipped"] == 0


def test_stereo_44k_flac_file_to_float_wav(tiny_bundle, utterances, tmp_path):
    src = write_stereo_44k_flac(utterances[0], tmp_path / "stereo.flac")
    out = tmp_path / "result.wav"
    summary = run(config(ckpt=tiny_bundle, src=src, out=out, out_format="float"))  # ref=null: default speaker
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "FLOAT")
    samples = len(load_audio(src))  # mono, resampled to 16 kHz
    assert info.frames == frame_limit(samples) * HOP
    assert summary["audio_seconds"] == pytest.approx(samples / SR)
    wav = sf.read(str(out), dtype="float32")[0]
    assert np.isfinite(wav).all() and np.abs(wav).max() > 0


def test_glob_and_default_output_folder(tiny_bundle, utterances, ref, tmp_path):
    src = tmp_path / "in"
    write_stereo_44k_flac(utterances[0], src / "d" / "one.flac")
    shutil.copy(utterances[1], src / "d" / "two.wav")
    summary = run(
        config(ckpt=tiny_bundle, src=f"{src}/**/*.flac", ref=ref, **{"paths.output_dir": tmp_path / "run"})
    )
    assert summary["outputs"] == [str(tmp_path / "run" / "converted" / "d" / "one.wav")]


def test_bad_files_are_listed_and_the_others_converted(tiny_bundle, utterances, ref, tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(utterances[0], src / "good.wav")
    (src / "empty.wav").write_bytes(b"")
    (src / "text.wav").write_text("this is not audio")
    sf.write(str(src / "short.wav"), 0.3 * np.sin(np.arange(800) / 5.0), SR)
    sf.write(str(src / "silence.wav"), np.zeros(SR, np.float32), SR)
    nan = 0.1 * np.sin(np.arange(SR) / 5.0)
    nan[100] = np.nan
    sf.write(str(src / "nan.wav"), nan, SR, subtype="FLOAT")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="vc.infer"), pytest.raises(VCError) as err:
        run(config(ckpt=tiny_bundle, src=src, ref=ref, out=out))
    message = str(err.value)
    assert message.startswith("5 of 6 file(s) failed: ")
    log = "\n".join(r.message for r in caplog.records)
    expected = {
        "empty.wav": "empty file (0 bytes)",
        "text.wav": "not a readable audio file",
        "short.wav": "0.050 s is too short; at least 0.10 s is needed",
        "silence.wav": "the audio is silent",
        "nan.wav": "contains NaN or Inf samples",
    }
    for name, reason in expected.items():
        assert f"failed: {src / name}: {reason}" in log
    assert "converted 1 files (" in log and "5 failed" in log
    assert (out / "good.wav").is_file() and sorted(p.name for p in out.iterdir()) == ["good.wav"]


def test_short_reference_warns_and_converts(tiny_bundle, utterances, tmp_path, caplog):
    short_ref = tmp_path / "short_ref.wav"
    sf.write(str(short_ref), sf.read(str(utterances[1]))[0][: SR // 2], SR)
    with caplog.at_level(logging.WARNING, logger="vc.converter"):
        summary = run(config(ckpt=tiny_bundle, src=utterances[0], ref=short_ref, out=tmp_path / "out"))
    assert summary["converted"] == 1
    assert any(
        str(short_ref) in r.message and "short for a reliable x-vector" in r.message for r in caplog.records
    )


def test_references_from_a_folder_are_averaged(tiny_bundle, utterances, tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    for p in utterances[4:7]:
        shutil.copy(p, refs / p.name)
    assert (
        run(config(ckpt=tiny_bundle, src=utterances[0], ref=refs, out=tmp_path / "o.wav"))["converted"] == 1
    )


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (
            {"ckpt": "./missing/bundle"},
            ConfigError,
            r"ckpt=./missing/bundle: no such bundle, checkpoint or model folder",
        ),
        ({"src": "EMPTY"}, AudioError, r"src=.*empty_dir: no audio files in this folder or below it"),
        ({"src": "MISSING"}, AudioError, r"src=.*nowhere.wav: no such file or folder"),
        ({"src": "NOTES"}, VCError, r"1 of 1 file\(s\) failed: .*notes.txt: not a readable audio file"),
        ({"out": "one.wav"}, ConfigError, r"out=.*one.wav is a file name, but src=.* holds 2 files"),
        ({"out_format": "mp3"}, ConfigError, "out_format=mp3: use pcm16 or float"),
        ({"ref": "MISSING"}, AudioError, r"ref=.*nowhere.wav: no such file or folder"),
        ({"threads": 0}, ConfigError, r"threads=0: use a whole number of 1 or more, or null"),
        ({"quantize": "int4"}, ConfigError, r"quantize=int4: use auto, none or fp16"),
    ],
    ids=[
        "missing-ckpt",
        "no-audio-folder",
        "missing-src",
        "not-audio",
        "file-out-for-folder",
        "format",
        "missing-ref",
        "threads",
        "quantize",
    ],
)
def test_bad_setup_names_the_input_and_fix(tiny_bundle, utterances, tmp_path, overrides, error, message):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "two").mkdir()
    for p in utterances[:2]:
        shutil.copy(p, tmp_path / "two" / p.name)
    places = {
        "EMPTY": tmp_path / "empty_dir",
        "MISSING": tmp_path / "nowhere.wav",
        "NOTES": tmp_path / "notes.txt",
    }
    args = {"ckpt": tiny_bundle, "src": tmp_path / "two", "out": tmp_path / "out"}
    args.update({k: places.get(v, v) for k, v in overrides.items()})
    with pytest.raises(error, match=message):
        run(config(**args))


def test_threads_setting_is_applied(tiny_bundle, utterances, tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        out = run(config(ckpt=tiny_bundle, src=utterances[0], out=tmp_path / "one.wav", threads=1))
        assert out["converted"] == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_serve_mode_hands_over_to_vc_serve(monkeypatch):
    seen = []
    monkeypatch.setitem(sys.modules, "vc.serve", types.SimpleNamespace(run=seen.append))
    cfg = config(ckpt="some/model", mode="serve")
    run(cfg)
    assert seen == [cfg]
    assert dict(cfg.serve) == {
        "host": "127.0.0.1",
        "port": 8080,
        "max_batch_size": 8,
        "max_wait_ms": 10,
        "max_request_mb": 20,
    }


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), "device=cpu", "generation.threshold=3", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_folder_with_a_bad_file_exits_2_without_traceback(tiny_bundle, utterances, ref, tmp_path):
    """Relative src and out are relative to where the command runs; the good file is written,
    the bad one named, the exit status is 2 and no traceback is shown."""
    (tmp_path / "in" / "sub").mkdir(parents=True)
    shutil.copy(utterances[0], tmp_path / "in" / "sub" / "good.wav")
    (tmp_path / "in" / "broken.wav").write_text("not audio")
    done = _cli(tmp_path, f"ckpt={tiny_bundle}", "src=in", f"ref={ref}", "out=converted")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "error: 1 of 2 file(s) failed: in/broken.wav: not a readable audio file" in done.stderr
    assert (tmp_path / "converted" / "sub" / "good.wav").is_file()
    assert "converted 1 files (" in done.stdout


def test_cli_missing_checkpoint_exits_2_without_traceback(utterances, tmp_path):
    shutil.copy(utterances[0], tmp_path / "x.wav")
    done = _cli(tmp_path, "ckpt=./no/such/bundle", "src=x.wav")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error: ckpt=./no/such/bundle: no such bundle, checkpoint or model folder" in done.stderr
