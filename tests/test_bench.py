"""vc.bench on the tiny models and tiny sizes: every section's table and ratio column is printed.

No timing is asserted (timings are printed by the benchmark, never tested); the tests check the
invariants that make the comparisons fair: the baseline's step computes the same loss as the
pipeline's, and both conversion sides produce the same amount of audio.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import compose_config
from vc import bench
from vc.model.quantize import fp16_weights_supported

SECTIONS = ("## Training", "## Conversion", "## Long audio", "## Goals")
RATIO_COLUMNS = ("| vs seed |", "| vs one-by-one |")


# one torch thread: the cores may be shared (generation ran ~60x slower with 2 threads on 2 busy cores)
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_overrides(tmp_path) -> list[str]:
    """The benchmark at test size: tiny models, synthetic audio (never ../shared), in-process rows."""
    return [
        "size=tiny",
        "xvector=tiny",
        f"data.arctic_root={tmp_path}/no_arctic",
        f"paths.output_dir={tmp_path}/out",
        "isolate=false",
        "train.utterances=4",
        "train.batch_size=2",
        "train.num_workers=1",
        "convert.utterances=3",
        "convert.batch_size=2",
        "convert.mcd_utterances=1",
        "long.minutes=[0.05]",
    ]


def test_prints_every_section_with_its_ratio_column(tmp_path, capsys):
    report = bench.run(compose_config("bench", tiny_overrides(tmp_path)))
    text = capsys.readouterr().out
    for heading in (*SECTIONS, *RATIO_COLUMNS):
        assert heading in text
    cpu_rungs = [v.label for v in bench.TRAIN_VARIANTS.values() if not (v.gpu_only or v.compile)]
    assert len(cpu_rungs) == 4
    for label in cpu_rungs:
        assert label in text
    assert "one-by-one generate_speech + vocoder (seed)" in text
    assert "VoiceConverter, batch 2, fp32" in text and "VoiceConverter, batch 2, int8" in text
    if fp16_weights_supported():
        assert "VoiceConverter, batch 2, fp16-decoder" in text
    reduced = [r for r in report.convert if r["precision"] not in ("fp32",)]
    assert reduced and all(r["mcd_db"] >= 0 and "accepted" in r for r in reduced)
    assert "synthetic" in report.meta["corpus"]
    # the same work on both conversion sides: the fixed output length gives the same audio out
    outs = {row["label"]: row["out_s"] for row in report.convert}
    assert len(set(outs.values())) == 1, outs
    assert [r["samples"] for r in report.train] == [4, 4, 4, 4]
    trainable = {r["variant"]: r["trainable"] for r in report.train}
    assert trainable["frozen"] < trainable["bucketed"] == trainable["seed"]
    assert [r["minutes"] for r in report.long] == [0.05]
    assert (tmp_path / "out" / "bench.md").read_text() in text
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["meta"]["size"] == "tiny"
    assert (tmp_path / "out" / "bench.png").stat().st_size > 10_000


def test_plot_draws_earlier_runs_together(tmp_path):
    from vc.errors import ConfigError

    first = tmp_path / "train"
    bench.run(compose_config("bench", [*tiny_overrides(first), "sections=[train]"]))
    second = tmp_path / "convert"
    bench.run(compose_config("bench", [*tiny_overrides(second), "sections=[convert]", "convert.precisions=[]"]))
    runs = [first / "out" / "bench.json", second / "out" / "bench.json"]
    plot = compose_config("bench", [f"paths.output_dir={tmp_path}/plot", f"plot=[{runs[0]},{runs[1]}]"])
    assert bench.run(plot) is None
    picture = tmp_path / "plot" / "bench.png"
    assert picture.stat().st_size > 10_000
    # both sections are drawn: wider than the one-panel picture of a single section
    from PIL import Image

    assert Image.open(picture).width > Image.open(first / "out" / "bench.png").width
    with pytest.raises(ConfigError, match=r"plot: .*nowhere.json is not a readable bench.json"):
        bench.run(compose_config("bench", [f"paths.output_dir={tmp_path}/p2", f"plot=[{tmp_path}/nowhere.json]"]))
    (tmp_path / "other.json").write_text('{"loss": 1.0}')
    with pytest.raises(ConfigError, match=r"plot: .*other.json is JSON but not a bench.json"):
        bench.run(compose_config("bench", [f"paths.output_dir={tmp_path}/p2", f"plot=[{tmp_path}/other.json]"]))


def test_conversion_rounds_are_interleaved_and_the_best_kept(tmp_path, capsys):
    overrides = [*tiny_overrides(tmp_path), "sections=[convert]", "convert.repeats=2", "convert.precisions=[]"]
    report = bench.run(compose_config("bench", overrides))
    assert "best of 2 interleaved rounds" in capsys.readouterr().out
    assert len(report.convert) == 2
    for row in report.convert:
        assert len(row["times_s"]) == 2 and row["time_s"] == min(row["times_s"])
    from vc.errors import ConfigError

    with pytest.raises(ConfigError, match=r"convert.repeats=0: use 1 or more"):
        bench.run(compose_config("bench", [*overrides[:-2], "convert.repeats=0"]))


def test_sections_can_be_chosen(tmp_path, capsys):
    bench.run(compose_config("bench", [*tiny_overrides(tmp_path), "sections=[train]"]))
    text = capsys.readouterr().out
    assert "## Training" in text and "## Conversion" not in text and "## Long audio" not in text
    assert "## Goals" in text and "not measured" in text
    kind = "gpu" if torch.cuda.is_available() else "cpu"
    assert f"conversion vs one-by-one ({kind}) | >= " in text and "- (section not run)" in text


@pytest.mark.parametrize("threads", ["0", "-2", "1.5"])
def test_bad_threads_are_a_config_error(tmp_path, threads):
    from vc.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"threads={threads}: use a whole number of 1 or more, or null"):
        bench.run(compose_config("bench", [*tiny_overrides(tmp_path), f"threads={threads}"]))
    assert not (tmp_path / "out" / "bench.md").exists()


def test_unknown_section_is_a_config_error(tmp_path):
    from vc.errors import ConfigError

    with pytest.raises(ConfigError, match="sections"):
        bench.run(compose_config("bench", [*tiny_overrides(tmp_path), "sections=[fast]"]))


@pytest.mark.parametrize("variants", ["[bucketed]", "[seed,fast]"])
def test_bad_training_variants_are_a_config_error(tmp_path, variants):
    from vc.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.variants=.*use null or a list of seed, cached, .* that includes seed"):
        bench.run(compose_config("bench", [*tiny_overrides(tmp_path), f"train.variants={variants}"]))
    assert not (tmp_path / "out" / "bench.md").exists()


def test_training_rungs_follow_the_device():
    cfg = compose_config("bench", ["train.variants=[seed,bucketed,bf16]"])
    assert bench.train_variants(cfg, torch.device("cpu")) == ["seed", "bucketed"]
    assert bench.train_variants(cfg, torch.device("cuda")) == ["seed", "bucketed", "bf16"]
    everything = compose_config("bench", ["compile=true"])
    assert bench.train_variants(everything, torch.device("cpu")) == [
        "seed",
        "cached",
        "bucketed",
        "frozen",
        "compile",
    ]


def test_seed_style_step_computes_the_pipelines_loss(tmp_path):
    """The baseline's own-forward step and VCLitModule.teacher_forced give the same loss on the
    same batch, so the training comparison measures the data pipeline and batching, not the model."""
    from vc.data.speakers import SpeakerEmbedder
    from vc.model.module import VCLitModule

    models = bench.build_models(tmp_path / "models", "tiny", "tiny")
    pairs = bench.synthetic_pairs(tmp_path / "audio", 2)
    audio = dict(compose_config("bench", [])["audio"])
    module = VCLitModule(
        pretrained=str(models.speecht5),
        vocoder=str(models.vocoder),
        audio=audio,
        dropout={"hidden_dropout": 0.0},
    ).eval()
    batches = bench.SeedStyleBatches(
        pairs, audio, SpeakerEmbedder(str(models.xvector)), module.reduction_factor
    )
    batch = batches.batch([0, 1])
    # SpeechT5's decoder pre-net applies dropout even in eval mode: the same seed, the same masks
    torch.manual_seed(0)
    seed_loss = bench.seed_style_loss(module, batch)
    torch.manual_seed(0)
    ours = module.teacher_forced(batch)["loss"]
    torch.testing.assert_close(seed_loss, ours)


def test_synthetic_pairs_have_arctic_lengths(tmp_path):
    pairs = bench.synthetic_pairs(tmp_path, 6)
    seconds = bench.seconds_of([p.src_path for p in pairs])
    assert len(pairs) == 6 and all(1.5 <= s <= 5.0 for s in seconds)


def test_long_input_has_the_asked_length(tmp_path):
    pairs = bench.synthetic_pairs(tmp_path, 2)
    wav = bench.long_input([p.src_path for p in pairs], 0.25)
    assert wav.dtype == np.float32 and len(wav) == 15 * 16_000


def test_mel_cepstral_distortion_known_answers():
    rng = np.random.default_rng(0)
    mel = rng.normal(-4.0, 1.0, (50, 80))
    assert bench.mel_cepstral_distortion(mel, mel) == 0.0
    # a level change moves only c0, which is left out
    assert bench.mel_cepstral_distortion(mel, mel + 0.5) == pytest.approx(0.0, abs=1e-9)
    # one cepstral coefficient off by d: 10 / ln 10 * sqrt(2) * d on every frame
    from scipy.fft import dct, idct

    cep = dct(np.log(10.0) * mel, norm="ortho", axis=-1)
    cep[:, 3] += 0.1
    moved = idct(cep, norm="ortho", axis=-1) / np.log(10.0)
    expected = 10.0 / np.log(10.0) * np.sqrt(2.0) * 0.1
    assert bench.mel_cepstral_distortion(mel, moved) == pytest.approx(expected, rel=1e-6)
