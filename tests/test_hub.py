"""Sharing bundles on the Hub (vc.hub): the model card, the push, and loading a bundle repo back.

The Hub service is the one thing that cannot exist here: ``FakeHfApi`` stands in for ``HfApi``
and records what a push would send (its two calls and the files in the folder at upload time).
Loading goes through a real local Hub cache (``models--USER--NAME/blobs``, ``snapshots/<commit>``,
``refs/main``) that huggingface_hub's own ``scan_cache_dir`` reads back, under ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from tests.conftest import REPO_ROOT, compose_config
from vc import hub
from vc.errors import MissingModelError
from vc.model.bundle import BUNDLE_FILE

PAIR = "sya->syb"
REPO = "alice/speecht5-vc-smoke"

pytestmark = pytest.mark.usefixtures("one_thread")


def files_of(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file below ``folder`` (links followed)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def recorded_bundle(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny bundle recording a real fine-tune's settings: the train config composed from
    conf/train.yaml (ARCTIC awb -> clb, from microsoft/speecht5_vc) as train.py records it."""
    out = tmp_path_factory.mktemp("recorded") / "bundle"
    shutil.copytree(tiny_bundle, out)
    root = tmp_path_factory.mktemp("recorded_root")
    config = compose_config(
        "train",
        [
            "trainer.max_steps=4000",
            "trainer.precision=bf16-mixed",
            f"paths.output_dir={root}/run",
            f"paths.data_dir={root}/data",
            f"paths.cache_dir={root}/cache",
        ],
    )
    settings = OmegaConf.load(out / BUNDLE_FILE)
    settings.pretrained = "microsoft/speecht5_vc"
    settings.vocoder = "microsoft/speecht5_hifigan"
    settings.src_spk, settings.tgt_spk = "awb", "clb"
    settings.train_config = OmegaConf.to_container(config, resolve=True)
    OmegaConf.save(settings, out / BUNDLE_FILE)
    return out


@pytest.fixture(scope="module")
def eval_run(tiny_bundle, tmp_path_factory) -> Path:
    """A real eval.py run (vc.evaluate.run) of the tiny bundle: MCD and F0 of 3 synthetic test utterances."""
    from vc.evaluate import run

    root = tmp_path_factory.mktemp("eval_root")
    out = root / "run"
    cfg = compose_config(
        "eval",
        [
            f"ckpt={tiny_bundle}",
            "data=synthetic",
            f"paths.data_dir={root}/data",
            f"paths.cache_dir={root}/cache",
            f"paths.output_dir={out}",
            "data.split.test_ratio=0.2",
            "max_utterances=3",
            "metrics.run=[mcd,f0]",
            "device=cpu",
            "generation.threshold=3",
            "generation.maxlenratio=1.0",
        ],
    )
    run(cfg)
    return out


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, hub_offline) -> Path:
    """An empty local Hub cache (HF_HUB_CACHE), offline."""
    import huggingface_hub.constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


class FakeHfApi:
    """Stands in for huggingface_hub.HfApi: records create_repo and upload_folder, and the files
    of the uploaded folder as they are when upload_folder is called."""

    calls: list = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        readme = (folder / hub.CARD_FILE).read_text(encoding="utf-8")
        self.calls.append(("upload_folder", repo_id, kwargs, files_of(folder), readme))


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub.constants

    FakeHfApi.calls = []
    monkeypatch.setattr(hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return FakeHfApi


def table_rows(card_text: str) -> dict[str, list[str]]:
    """``{system label: cells}`` of the evaluation table of a card."""
    rows = {}
    for line in card_text.splitlines():
        if line.startswith(f"| {PAIR} |"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[1]] = cells[2:]
    return rows


# ---------------------------------------------------------------------------------------------
# The card


def test_card_metadata_is_hub_yaml_and_its_table_is_the_eval_summary(recorded_bundle, eval_run, tmp_path):
    from huggingface_hub import ModelCard, metadata_load

    from vc.evaluate import SYSTEM_LABELS, TABLE

    summary = json.loads((eval_run / "summary.json").read_text())
    card = hub.model_card(recorded_bundle, REPO, summary)
    card.save(tmp_path / "README.md")

    meta = metadata_load(tmp_path / "README.md")
    assert meta["license"] == "mit"
    assert meta["base_model"] == "microsoft/speecht5_vc"
    assert meta["pipeline_tag"] == "audio-to-audio"
    assert meta["datasets"] == ["cmu-arctic"]
    assert {"speecht5", "voice-conversion"} <= set(meta["tags"]) and "smoke-test" not in meta["tags"]
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.to_dict() == meta and loaded.data.base_model == "microsoft/speecht5_vc"
    text = loaded.text

    # what it was trained on and how: the recorded train config
    assert "| Speakers (source -> target) | awb -> clb |" in text
    assert "| Corpus | CMU ARCTIC |" in text
    assert "| Training budget | 4000 steps |" in text
    assert "| Precision | `bf16-mixed` |" in text

    # every cell of the table is the summary's mean ± CI half-width, in eval's own units
    rows = table_rows(text)
    results = summary["results"][PAIR]
    shown = [c for c in TABLE if c[1] in results["converted"]]
    assert [c[1] for c in shown] == ["mcd", "f0_rmse_hz", "f0_corr"]
    checked = 0
    for system in results:
        label = SYSTEM_LABELS[system]
        for cell, (_, column, scale, decimals) in zip(rows[label], shown, strict=True):
            entry = results[system][column]
            if entry["n"] == 0:
                assert cell == "n/a"
                continue
            half = (entry["ci_high"] - entry["mean"]) * scale
            assert cell == f"{entry['mean'] * scale:.{decimals}f} ± {half:.{decimals}f}"
            checked += 1
    assert checked >= 4  # source and converted MCD and F0 at least
    assert f"over {summary['data']['scored']} test utterance(s)" in text

    # the metric settings, verbatim
    block = re.search(r"```json\n(.*?)\n```", text, re.S).group(1)
    assert json.loads(block)["settings"] == summary["settings"]

    # how to use it, intended use, consent
    assert f"python infer.py ckpt={REPO} src=" in text
    assert f'VoiceConverter.from_pretrained("{REPO}")' in text
    assert f"python infer.py mode=demo ckpt={REPO}" in text
    assert "## Intended use and limitations" in text and "consent of its speaker" in text


def test_card_of_a_bundle_without_training_record(tiny_bundle, tmp_path):
    """The tiny bundle records no training config and a local base model: the card says so and
    claims no base_model; there is no evaluation section without --eval."""
    from huggingface_hub import metadata_load

    hub.model_card(tiny_bundle, REPO).save(tmp_path / "README.md")
    meta = metadata_load(tmp_path / "README.md")
    assert "base_model" not in meta and "datasets" not in meta
    text = (tmp_path / "README.md").read_text()
    assert "records no training configuration" in text and "## Evaluation" not in text


# ---------------------------------------------------------------------------------------------
# Push


def test_push_uploads_exactly_the_bundle_and_the_card(recorded_bundle, eval_run, fake_hub, capsys):
    assert hub.main(["push", str(recorded_bundle), REPO, "--private", "--eval", str(eval_run)]) == 0
    assert capsys.readouterr().out.strip() == f"pushed: https://huggingface.co/{REPO}"

    (create, repo, create_kwargs), upload = fake_hub.calls
    assert (create, repo) == ("create_repo", REPO)
    assert create_kwargs["private"] is True and create_kwargs["exist_ok"] is True
    name, repo, _, uploaded, readme = upload
    assert (name, repo) == ("upload_folder", REPO)
    expected = files_of(recorded_bundle)
    assert hub.CARD_FILE not in expected
    assert set(uploaded) == set(expected) | {hub.CARD_FILE}
    assert {k: v for k, v in uploaded.items() if k != hub.CARD_FILE} == expected
    summary = json.loads((eval_run / "summary.json").read_text())
    assert readme == str(hub.model_card(recorded_bundle, REPO, summary))


def test_dry_run_writes_the_folder_and_uploads_nothing(
    tiny_bundle, eval_run, fake_hub, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert hub.main(["push", str(tiny_bundle), REPO, "--eval", str(eval_run), "--dry-run"]) == 0
    folder = tmp_path / "outputs" / "hub" / "alice--speecht5-vc-smoke"
    assert capsys.readouterr().out.strip() == f"dry run: the folder to upload is {folder}"
    assert fake_hub.calls == []
    assert set(files_of(folder)) == set(files_of(tiny_bundle)) | {hub.CARD_FILE}
    # a second dry run replaces the first; a folder that is not one is refused
    assert hub.main(["push", str(tiny_bundle), REPO, "--dry-run"]) == 0
    assert "## Evaluation" not in (folder / hub.CARD_FILE).read_text()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert hub.main(["push", str(tiny_bundle), REPO, "--dry-run", "--out", "mine"]) == 2
    assert "--out mine: the folder exists and is not a staged bundle" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_bundle", "not a bundle folder (no vc.yaml)"),
        ("bad_repo", "'alice/bad--name' is not a Hub repo id: use USER/NAME"),
        ("no_repo_user", "'speecht5-vc-smoke' is not a Hub repo id: use USER/NAME"),
        ("no_token", "no Hugging Face token: log in with `hf auth login` or set HF_TOKEN"),
        ("offline", "HF_HUB_OFFLINE is set: the Hub cannot be reached"),
        ("bad_eval", "not an eval.py run folder (no summary.json)"),
    ],
)
def test_push_user_errors_are_one_line_and_exit_2(
    case, message, tiny_bundle, fake_hub, tmp_path, monkeypatch, capsys
):
    import huggingface_hub.constants

    bundle, repo, extra = str(tiny_bundle), REPO, []
    if case == "no_bundle":
        bundle = str(tmp_path)
    elif case == "bad_repo":
        repo = "alice/bad--name"
    elif case == "no_repo_user":
        repo = "speecht5-vc-smoke"
    elif case == "no_token":
        monkeypatch.delenv("HF_TOKEN")
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    elif case == "offline":
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    elif case == "bad_eval":
        extra = ["--eval", str(tmp_path)]
    assert hub.main(["push", bundle, repo, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert fake_hub.calls == []


def test_push_to_an_unreachable_hub_is_a_one_line_error(tiny_bundle, tmp_path):
    """The real HfApi, against a closed port on 127.0.0.1: no traceback, exit status 2."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HF_ENDPOINT": f"http://127.0.0.1:{port}",
        "HF_TOKEN": "hf_test_token",
        "HF_HUB_OFFLINE": "0",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "vc.hub", "push", str(tiny_bundle), REPO],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: could not push to {REPO} (") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# Pull


@pytest.fixture
def cached_repo(tiny_bundle, hub_cache, tmp_path) -> Path:
    """The dry-run folder of the tiny bundle, in the local Hub cache as REPO; returns its snapshot."""
    folder = hub.push(tiny_bundle, REPO, dry_run=True, out=tmp_path / "staged")
    return hub.add_to_cache(folder, REPO)


def test_cache_layout_is_what_huggingface_hub_reads(cached_repo, hub_cache, tiny_bundle):
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(hub_cache)
    assert not info.warnings
    (repo,) = info.repos
    (revision,) = repo.revisions
    assert (repo.repo_id, repo.repo_type, revision.refs) == (REPO, "model", frozenset({"main"}))
    assert revision.snapshot_path == cached_repo
    assert {f.file_path.relative_to(cached_repo).as_posix() for f in revision.files} == set(
        files_of(tiny_bundle)
    ) | {hub.CARD_FILE}
    # blobs are named as the Hub names them: the git blob id of a text file, the sha256 of a binary one
    config = cached_repo / "vocoder" / "config.json"
    weights = cached_repo / "vocoder" / "model.safetensors"
    assert config.is_symlink() and weights.is_symlink()
    data = config.read_bytes()
    assert config.resolve().name == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert weights.resolve().name == hashlib.sha256(weights.read_bytes()).hexdigest()
    if shutil.which("git"):
        proc = subprocess.run(["git", "hash-object", str(config)], capture_output=True, text=True, check=True)
        assert config.resolve().name == proc.stdout.strip()


def test_from_pretrained_loads_a_bundle_repo_whole_offline(cached_repo, tiny_bundle, synthetic_arctic):
    from vc.converter import VoiceConverter

    src = synthetic_arctic / "cmu_us_sya_arctic" / "wav" / "arctic_a0001.wav"
    generation = {"threshold": 3.0}
    converter = VoiceConverter.from_pretrained(REPO, device="cpu", generation=generation)
    # its own vocoder and speaker encoder, and its default speaker: the bundle, whole
    assert Path(converter.speaker_encoder) == cached_repo / "speaker_encoder"
    assert converter.default_speaker is not None
    local = VoiceConverter.from_pretrained(tiny_bundle, device="cpu", generation=generation)
    for part in ("model", "vocoder"):
        mine, theirs = getattr(converter, part).state_dict(), getattr(local, part).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), part
    np.testing.assert_array_equal(converter.default_speaker, local.default_speaker)
    out = converter.convert(src, ref=src)
    assert out.sample_rate == 16_000 and out.wav.size > 0
    # the same conversion as the bundle folder gives, up to float rounding
    np.testing.assert_allclose(out.wav, local.convert(src, ref=src).wav, atol=1e-4)


def test_infer_py_converts_with_a_bundle_repo_offline(cached_repo, hub_cache, synthetic_arctic, tmp_path):
    src = synthetic_arctic / "cmu_us_sya_arctic" / "wav" / "arctic_a0001.wav"
    ref = synthetic_arctic / "cmu_us_syb_arctic" / "wav" / "arctic_a0002.wav"
    out = tmp_path / "converted.wav"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(hub_cache),
        "OMP_NUM_THREADS": "1",
    }
    args = [
        f"ckpt={REPO}",
        f"src={src}",
        f"ref={ref}",
        f"out={out}",
        "device=cpu",
        f"hydra.run.dir={tmp_path}/run",
    ]
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "infer.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = sf.info(out)
    assert (info.samplerate, info.channels) == (16_000, 1) and info.frames > 0


def test_plain_speecht5_repo_in_the_cache_loads_as_before(tiny_models, hub_cache, synthetic_arctic):
    """A repo without vc.yaml is a SpeechT5 checkpoint: no default speaker, vocoder named apart."""
    from vc.converter import VoiceConverter

    hub.add_to_cache(tiny_models.speecht5, "someone/tiny-speecht5")
    converter = VoiceConverter.from_pretrained(
        "someone/tiny-speecht5",
        device="cpu",
        vocoder=str(tiny_models.vocoder),
        speaker_encoder=str(tiny_models.xvector),
    )
    assert converter.default_speaker is None and converter.speaker_encoder == str(tiny_models.xvector)
    ref = synthetic_arctic / "cmu_us_syb_arctic" / "wav" / "arctic_a0002.wav"
    assert converter.convert(ref, ref=ref).wav.size > 0


def test_offline_repo_missing_from_the_cache_names_it_and_the_fix(hub_cache):
    from vc.converter import VoiceConverter

    with pytest.raises(MissingModelError) as info:
        VoiceConverter.from_pretrained("alice/not-cached", device="cpu")
    message = str(info.value)
    assert "'alice/not-cached'" in message and str(hub_cache) in message and "HF_HUB_OFFLINE=1" in message
    assert "`hf download alice/not-cached`" in message and "`ckpt=/path/to/not-cached`" in message
