"""eval.py on the tiny bundle and the synthetic corpus: CSV, summary, table, pictures, WAVs; errors; val metrics.

The tiny HiFiGAN's random weights give output near 1e-7, which every metric treats as silence.
The ``loud_vocoder`` fixture scales its last layer so the converted audio is loud noise that all
metrics can score; eval takes it through the ``vocoder=`` override, training through
``model.vocoder=``. Generation uses threshold 3 (never reached by the random model, so each
output runs to maxlenratio 1.0: about as long as its source).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from omegaconf import OmegaConf

from tests.conftest import REPO_ROOT, compose_config, smoke_overrides
from vc.evaluate import COLUMNS, TABLE

# the systems of a parallel corpus (pretrained rows are data=voice's, tests/test_voice.py)
SYSTEMS = ("source", "converted", "target")

PAIR = "sya->syb"
CONVERSION = ["device=cpu", "generation.threshold=3", "generation.maxlenratio=1.0"]


# one torch thread: the cores may be shared (generation ran ~60x slower with 2 threads on 2 busy cores)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained_bundle(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny bundle, recording a training run on sya -> syb that trained on every pair."""
    from vc.model.bundle import BUNDLE_FILE

    out = tmp_path_factory.mktemp("trained_bundle") / "bundle"
    shutil.copytree(tiny_bundle, out)
    settings = OmegaConf.load(out / BUNDLE_FILE)
    split = {"scheme": "random", "seed": 42, "val_ratio": 0.0, "test_ratio": 0.0, "max_train_pairs": None}
    settings.train_config = {"data": {"src_spk": "sya", "tgt_spk": "syb", "split": split}}
    OmegaConf.save(settings, out / BUNDLE_FILE)
    return out


def data_overrides(root: Path) -> list[str]:
    return ["data=synthetic", f"paths.data_dir={root}/data", f"paths.cache_dir={root}/cache"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    height, width = imread(path).shape[:2]
    assert height > 100 and width > 100, (path, height, width)


def test_eval_cli_writes_every_output(smoke_root, trained_bundle, loud_vocoder, tmp_path):
    """`python eval.py` on 3 synthetic test utterances: CSV, summary, table, pictures, WAVs; exit status 0."""
    run_dir = tmp_path / "run"
    args = [
        f"ckpt={trained_bundle}",
        f"vocoder={loud_vocoder}",
        *data_overrides(smoke_root),
        *CONVERSION,
        "data.split.test_ratio=0.2",
        "max_utterances=3",
        "metrics.num_workers=2",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "eval.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    # one row per utterance and system, every metric with its reason column
    rows = read_csv(run_dir / "utterances.csv")
    assert len(rows) == 3 * len(SYSTEMS)
    assert {(r["system"], r["pair"]) for r in rows} == {(s, PAIR) for s in SYSTEMS}
    assert all(c in rows[0] and f"{c}_reason" in rows[0] for c in COLUMNS)
    by_system = {s: [r for r in rows if r["system"] == s] for s in SYSTEMS}
    for system in ("source", "converted"):
        assert all(math.isfinite(float(r["mcd"])) and not r["mcd_reason"] for r in by_system[system])
        assert all(math.isfinite(float(r["dnsmos_ovrl"])) for r in by_system[system])
    assert all(r["stop_reason"] == "max_length" for r in by_system["converted"])
    for r in by_system["target"]:
        assert r["mcd"] == "nan" and r["mcd_reason"].startswith("n/a")
        assert math.isfinite(float(r["secs"])) and math.isfinite(float(r["wer"]))
    for r in rows:  # a NaN always says why
        assert all(math.isfinite(float(r[c])) or r[f"{c}_reason"] for c in COLUMNS)

    # per pair, system and metric: mean, CI, counts; settings, backends, split
    summary = json.loads((run_dir / "summary.json").read_text())
    results = summary["results"][PAIR]
    assert set(results) == set(SYSTEMS)
    for system in SYSTEMS:
        assert set(results[system]) == set(COLUMNS)
        for entry in results[system].values():
            assert {"mean", "ci_low", "ci_high", "n", "n_nan"} <= set(entry) and entry["n"] + entry[
                "n_nan"
            ] == 3
    mcd = results["converted"]["mcd"]
    assert mcd["n"] == 3 and mcd["ci_low"] < mcd["mean"] < mcd["ci_high"]
    assert results["target"]["mcd"] == {
        "mean": None,
        "ci_low": None,
        "ci_high": None,
        "n": 0,
        "n_nan": 3,
        "nan_reasons": {"n/a: the target recording against itself is 0 by definition": 3},
    }
    assert summary["backend_versions"]["pyworld"] and summary["backend_versions"]["speechmos"]
    assert set(summary["settings"]) == {"mcd_f0", "secs", "asr", "dnsmos"}
    assert (
        summary["settings"]["mcd_f0"]["mcep_order"] == 24
        and summary["settings"]["asr"]["packages"]["pocketsphinx"]
    )
    assert (
        summary["data"]["split_sizes"] == {"train": 14, "val": 5, "test": 5}
        and summary["data"]["scored"] == 3
    )
    assert summary["ckpt"] == str(trained_bundle) and summary["pairs"] == [PAIR]
    # the bundle trained on every pair, so the test utterances were training pairs
    assert summary["data"]["train_overlap"]["train"] == 3
    assert "3 of the 3 scored utterances were training pairs" in (run_dir / "eval.log").read_text()

    table = (run_dir / "table.md").read_text()
    header, rule, *body = table.splitlines()
    assert header == "| Pair | System | " + " | ".join(c[0] for c in TABLE) + " |"
    assert [line.split(" | ")[1] for line in body[:3]] == ["source (floor)", "converted", "target (ceiling)"]
    assert body[2].split(" | ")[2] == "n/a" and " ± " in body[1].split(" | ")[2]

    for name in ("metrics.png", "mel_best.png", "mel_worst.png"):
        assert_png(run_dir / "plots" / name)
    wavs = sorted((run_dir / "converted").glob("*.wav"))
    assert [w.stem for w in wavs] == sorted(r["utt_id"] for r in by_system["converted"])
    assert all(sf.info(str(w)).samplerate == 16000 for w in wavs)
    assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"


def test_manifest_pairs_without_text_or_readable_audio_get_nan_with_a_reason(
    smoke_root, tiny_bundle, loud_vocoder, tmp_path
):
    """A CSV manifest, x-vectors from each pair's own target recording, MCD and ASR only, no ceiling
    rows; of the 3 test pairs one has no text and one an unreadable source."""
    from vc.data.corpus import Pair
    from vc.data.splits import split_pairs
    from vc.evaluate import run

    wav_dir = smoke_root / "data" / "synthetic"
    ids = [f"arctic_a{k:04d}" for k in range(1, 11)]
    pairs = [
        Pair(u, wav_dir / f"cmu_us_sya_arctic/wav/{u}.wav", wav_dir / f"cmu_us_syb_arctic/wav/{u}.wav")
        for u in ids
    ]
    # the split depends on the ids and the seed only, so the test pairs are known in advance
    no_text, ok, broken = [p.utt_id for p in split_pairs(pairs, seed=42, val_ratio=0.0, test_ratio=0.3).test]
    broken_src = tmp_path / "broken" / f"{broken}.wav"
    broken_src.parent.mkdir()
    broken_src.write_bytes(b"not audio")
    manifest = tmp_path / "pairs.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["src_path", "tgt_path", "text"])
        for p in pairs:
            src = broken_src if p.utt_id == broken else p.src_path
            writer.writerow([src, p.tgt_path, "" if p.utt_id == no_text else "the old sailor waited."])
    cfg = compose_config(
        "eval",
        [
            f"ckpt={tiny_bundle}",
            f"vocoder={loud_vocoder}",
            "data=manifest",
            f"data.corpus.path={manifest}",
            "data.split.val_ratio=0.0",
            "data.split.test_ratio=0.3",
            "speaker=utterance",
            "metrics.run=[mcd,asr]",
            "references.target=false",
            f"paths.output_dir={tmp_path / 'out'}",
            *CONVERSION,
        ],
    )
    summary = run(cfg)
    rows = read_csv(tmp_path / "out" / "utterances.csv")
    assert sorted((r["utt_id"], r["system"]) for r in rows) == sorted(
        (u, s) for u in (no_text, ok, broken) for s in ("source", "converted")
    )
    assert not any(c.startswith(("secs", "dnsmos", "f0")) for c in rows[0])
    for r in rows:
        if r["utt_id"] == no_text:
            assert r["cer"] == r["wer"] == "nan" and r["cer_reason"].startswith("no text for this pair")
            assert math.isfinite(float(r["mcd"]))
        elif r["utt_id"] == ok:
            assert all(math.isfinite(float(r[c])) for c in ("mcd", "cer", "wer"))
        else:
            assert all(
                r[c] == "nan" and "not a readable audio file" in r[f"{c}_reason"] for c in ("mcd", "cer")
            )
    assert list(summary["data"]["failed"]) == [broken] and summary["data"]["scored"] == 2
    results = summary["results"]["source->target"]
    assert set(results) == {"source", "converted"} and results["converted"]["mcd"]["n"] == 2
    assert summary["pairs"] == ["source->target"] and summary["speaker"] == "utterance"
    assert summary["data"]["train_overlap"] is None
    table = (tmp_path / "out" / "table.md").read_text()
    assert table.startswith("| Pair | System | MCD (dB) ↓ | WER (%) ↓ | CER (%) ↓ |\n")


def test_empty_test_split_is_a_clear_error(smoke_root, tiny_bundle, tmp_path, capsys):
    """test_ratio 0 (train.yaml's default) -> exit status 2 and a message naming the fix, no traceback."""
    from vc.cli import main
    from vc.evaluate import run

    cfg = compose_config(
        "eval",
        [
            f"ckpt={tiny_bundle}",
            *data_overrides(smoke_root),
            "data.split.test_ratio=0",
            f"paths.output_dir={tmp_path}",
        ],
    )
    with pytest.raises(SystemExit) as exit_info:
        main(run, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    # the one line after the model-loading progress bar
    assert err.splitlines()[-1].startswith("error: The test split of synthetic sya->syb is empty")
    assert "data.split.test_ratio" in err and "data.split.scheme=paper" in err and "Traceback" not in err


def test_an_empty_val_split_names_val_ratio(smoke_root, tiny_bundle, tmp_path):
    from vc.errors import DataError
    from vc.evaluate import run

    cfg = compose_config(
        "eval",
        [
            f"ckpt={tiny_bundle}",
            *data_overrides(smoke_root),
            "split=val",
            "data.split.val_ratio=0",
            f"paths.output_dir={tmp_path}",
        ],
    )
    with pytest.raises(
        DataError, match=r"The val split of synthetic sya->syb is empty .*data\.split\.val_ratio above 0"
    ):
        run(cfg)


def test_a_missing_ckpt_is_reported_before_the_corpus_is_downloaded(tmp_path):
    """`python eval.py ckpt=<typo>` on ARCTIC: exit 2 with the ckpt named, and no download started."""
    corpus = tmp_path / "cmu_arctic"
    args = [
        f"ckpt={tmp_path / 'runs' / 'typo' / 'bundle'}",
        f"data.corpus.root={corpus}",
        # nothing listens there: a download attempt would fail with a different message
        "data.corpus.mirror=http://127.0.0.1:9/packed",
        f"hydra.run.dir={tmp_path / 'out'}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "eval.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith(f"error: ckpt={tmp_path / 'runs' / 'typo' / 'bundle'}: no such bundle")
    assert "Traceback" not in proc.stderr and not corpus.exists()


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "metrics.run=[mcd,pesq]",
            "metrics.run=[mcd, pesq]: use a list of any of mcd, f0, secs, asr, dnsmos",
        ),
        ("split=dev", "split=dev: use test, val or train"),
        ("speaker=mean", "speaker=mean: use average, utterance or default"),
        ("ckpt=???", "ckpt is required"),
        ("ckpt=", "ckpt='': use a bundle folder"),  # ckpt=$UNSET_VARIABLE in a shell
    ],
)
def test_bad_settings_name_the_key_and_the_choices(override, message, tmp_path):
    from vc.errors import ConfigError
    from vc.evaluate import run

    cfg = compose_config("eval", ["ckpt=unused", "data=synthetic", override, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(cfg)


def test_validation_metrics_are_logged_during_training(smoke_root, loud_vocoder, tmp_path, caplog):
    """callbacks.validation_audio.metrics=[mcd,secs] logs val/mcd and val/secs at each validation and
    makes them callback metrics (the run returns optimized_metric=val/mcd; checkpoints can monitor it)."""
    from vc.callbacks import ValidationAudio
    from vc.errors import ConfigError
    from vc.train import run

    with pytest.raises(ConfigError, match=r"validation_audio\.metrics: unknown metric\(s\) pesq"):
        ValidationAudio(metrics=["mcd", "pesq"])
    cfg = compose_config(
        "train",
        smoke_overrides(smoke_root, tmp_path)
        + [
            "callbacks.validation_audio.metrics=[mcd,secs]",
            f"model.vocoder={loud_vocoder}",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "data.val_samples=1",
            "export=null",
            "optimized_metric=val/mcd",
            "callbacks.model_checkpoint.monitor=val/mcd",
        ],
    )
    with caplog.at_level(logging.WARNING, logger="vc.callbacks"):
        value = run(cfg)
    rows = [r for r in read_csv(tmp_path / "csv" / "metrics.csv") if r.get("val/mcd")]
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(float(r["val/mcd"]) > 0 for r in rows)
    # Resemblyzer's voice activity detector may find no speech in the tiny model's noise: NaN, and why
    for r in rows:
        assert (
            math.isfinite(float(r["val/secs"])) or "val/secs is NaN for a validation utterance" in caplog.text
        )
    assert value == pytest.approx(float(rows[-1]["val/mcd"]), rel=1e-5)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step*.ckpt")) == [
        "step0000002.ckpt",
        "step0000004.ckpt",
    ]
