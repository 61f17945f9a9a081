"""What a hurried user meets with infer.py, through the real command line where they meet it.

File names Hydra's grammar cannot take as typed, outputs that cannot be written (a full disk, a
read-only folder, a file where a folder should be), outputs that overlap the inputs, damaged
bundles and checkpoints, cut-short and cancelling audio, and what interrupted runs leave behind.
The expectation is the same everywhere: one line naming the input and the fix, exit status 2,
every file that can be converted is converted, and no temporary file is left.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from omegaconf import OmegaConf

from tests.conftest import REPO_ROOT, compose_config
from vc.errors import AudioError, ConfigError, VCError
from vc.infer import run

SR = 16_000
# above the kernel's largest pid (pid_max is at most 2**22): no process has it
DEAD_PID = 2**22 + 1

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def utterances(synthetic_arctic) -> list[Path]:
    return sorted((synthetic_arctic / "cmu_us_sya_arctic" / "wav").glob("*.wav"))


def config(**overrides):
    """conf/infer.yaml as infer.py composes it (generation runs to the length limit, see test_infer)."""
    args = {"generation.threshold": 3.0, "device": "cpu", **overrides}
    return compose_config("infer", [f"{k}={_quote(v)}" for k, v in args.items()])


def _quote(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "\\'") + "'"


def cli(
    cwd: Path, *args: str, limit_bytes: int | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python infer.py ARGS`` in ``cwd``; ``limit_bytes`` caps the size of any file it writes."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "infer.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit if limit_bytes else None,
    )


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The error line of a run that exited 2 without a traceback."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]


# ----------------------------------------------------------------------------------- file names

NAMES = [
    "take 1, final.wav",
    "interview (1).wav",
    "Ünïcode ünd space.wav",
    'it\'s = "fine" #1.wav',
    "50% [draft] ${x}.wav",
]


@pytest.mark.parametrize("name", NAMES)
def test_a_name_hydra_cannot_take_gets_the_corrected_command(name, utterances, tmp_path):
    """Typed as it is (inside the shell's quotes), the name is answered with one line showing the
    command with the value quoted for Hydra; that command reads back exactly the name."""
    shutil.copy(utterances[0], tmp_path / name)
    done = cli(tmp_path, "ckpt=./no/such/bundle", f"src={name}", "device=cpu")
    line = one_line_error(done)
    assert line.startswith(f"error: src={name}: ") and "; run: python " in line, line
    command = shlex.split(line.split("; run: ", 1)[1])
    assert command[:3] == ["python", str(REPO_ROOT / "infer.py"), "ckpt=./no/such/bundle"]
    assert command[4:] == ["device=cpu"]
    shown = subprocess.run(
        [sys.executable, *command[1:], "--cfg", "job", "--resolve"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["src"] == name


def test_quoted_names_convert(tiny_bundle, utterances, tmp_path):
    """src, ref and out with spaces, commas, parentheses, quotes and non-ASCII letters, quoted as
    --help and the README show, convert."""
    src, ref, out = "take 1, final.wav", "interview (1) — Zoë's.wav", 'out [v2] "ok", 50%.wav'
    shutil.copy(utterances[0], tmp_path / src)
    shutil.copy(utterances[1], tmp_path / ref)
    done = cli(
        tmp_path,
        f"ckpt={tiny_bundle}",
        f'src="{src}"',
        f'ref="{ref}"',
        f"out='{out}'",
        "device=cpu",
        "generation.threshold=3",
    )
    assert done.returncode == 0, done.stderr
    assert sf.info(str(tmp_path / out)).samplerate == SR
    assert "converted 1 files (" in done.stdout


def test_the_readmes_quoting_works_through_a_real_shell(tmp_path):
    """The README's examples, run by bash as a user pastes them, give Hydra exactly the names."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### File names with spaces, commas or parentheses", 1)[1]
    lines = section.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    expected = [
        {"src": "take 1, final.wav", "ref": "interview (1).wav", "out": "Zoë/converted.wav"},
        {"src": "speech.wav", "ref": ["take 1, final.wav", "interview (1).wav"], "out": None},
        {"src": "it's here.wav", "ref": None, "out": None},
    ]
    assert len(lines) == len(expected)
    for line, values in zip(lines, expected, strict=True):
        command = line.replace(
            "python infer.py", f"{shlex.quote(sys.executable)} infer.py --cfg job --resolve", 1
        )
        shown = subprocess.run(
            ["bash", "-c", command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
        )
        assert shown.returncode == 0, shown.stderr
        cfg = yaml.safe_load(shown.stdout)
        assert {k: cfg[k] for k in values} == values, line


def test_a_sweep_without_m_and_a_name_read_as_a_number(tmp_path):
    line = one_line_error(cli(tmp_path, "ckpt=x", "src=1.50", "out=a,b.wav"))
    assert "src=1.50: Hydra reads this name as the number 1.5" in line
    assert "out=a,b.wav: Hydra reads the commas as a sweep over several values" in line
    assert line.endswith(f"""run: python {REPO_ROOT / "infer.py"} ckpt=x 'src="1.50"' 'out="a,b.wav"'""")


# ------------------------------------------------------------------------ outputs not written


def _sources(utterances: list[Path], root: Path) -> Path:
    """in/a/short.wav (0.25 s, a small output), in/b/long.wav and in/c/z.wav (larger outputs)."""
    src = root / "in"
    for sub in "abc":
        (src / sub).mkdir(parents=True)
    sf.write(str(src / "a" / "short.wav"), sf.read(str(utterances[0]))[0][: SR // 4], SR)
    shutil.copy(utterances[1], src / "b" / "long.wav")
    shutil.copy(utterances[2], src / "c" / "z.wav")
    return src


def test_a_file_limit_and_a_file_in_the_way_fail_those_outputs_only(tiny_bundle, utterances, tmp_path):
    """A process file-size limit (the disk-full path: the write fails midway) and a file where an
    output folder should be: those outputs are named with the reason, the other one is written,
    exit status 2, and no temporary file is left."""
    _sources(utterances, tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "c").write_text("a file where the folder c/ should be")
    done = cli(
        tmp_path,
        f"ckpt={tiny_bundle}",
        "src=in",
        "out=out",
        "device=cpu",
        "generation.threshold=3",
        "hydra.run.dir=run",
        limit_bytes=60_000,
    )
    line = one_line_error(done)
    assert line.startswith("error: 2 of 3 file(s) failed: ")
    assert "out/b/long.wav: cannot write the output: File too large" in line
    assert (
        "out/c/z.wav: cannot write the output: File exists: out/c is a file where a folder is needed" in line
    )
    assert (tmp_path / "out" / "a" / "short.wav").is_file()
    assert not (tmp_path / "out" / "b" / "long.wav").exists()
    assert temporaries(tmp_path) == []


def _user_namespaces() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _user_namespaces(), reason="needs `unshare -rm` (user and mount namespaces)")
def test_a_full_disk_and_a_read_only_folder_fail_those_outputs_only(tiny_bundle, utterances, tmp_path):
    """A real full disk (a 64 kB tmpfs) and a real read-only folder (a read-only bind mount), in a
    private mount namespace, so this works as root too (root ignores permission bits)."""
    _sources(utterances, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {out} && mkdir {out}/c && mount --bind {out}/c {out}/c && "
        f"mount -o remount,bind,ro {out}/c && {shlex.join([sys.executable, str(REPO_ROOT / 'infer.py')])} "
        f"ckpt={tiny_bundle} src=in out=out device=cpu generation.threshold=3 hydra.run.dir=run; "
        f"echo rc=$? >&2; find {out} -type f >&2"
    )
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "rc=2" in done.stderr and "Traceback" not in done.stderr, done.stderr
    line = next(x for x in done.stderr.splitlines() if x.startswith("error: "))
    assert line.startswith("error: 2 of 3 file(s) failed: ")
    assert "out/b/long.wav: cannot write the output: No space left on device. Free some space" in line
    assert (
        "out/c/z.wav: cannot write the output: Read-only file system: the folder out/c is not writable"
        in line
    )
    written = [x for x in done.stderr.splitlines() if x.startswith(str(out))]
    assert written == [f"{out}/a/short.wav"], done.stderr


def test_write_wav_leaves_nothing_when_the_write_fails(tmp_path):
    from vc.audio import write_wav

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError):
        write_wav(tmp_path / "file" / "x.wav", np.zeros(SR, np.float32))
    (tmp_path / "x.wav").mkdir()
    with pytest.raises(IsADirectoryError):
        write_wav(tmp_path / "x.wav", np.zeros(SR, np.float32))
    assert temporaries(tmp_path) == []


# ------------------------------------------------------------------------------------- overlap


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "MP3"])
def test_out_equal_to_the_source_is_refused_before_any_model_loads(fmt, utterances, tmp_path):
    """ckpt points at nothing: the refusal comes before the model would be looked for."""
    name = f"speech.{fmt.lower()}"
    data, rate = sf.read(str(utterances[0]))
    sf.write(str(tmp_path / name), data, rate, format=fmt)
    before = (tmp_path / name).read_bytes()
    line = one_line_error(cli(tmp_path, "ckpt=./no/such/bundle", f"src={name}", f"out={name}"))
    assert line.startswith(f"error: out={name} is the source file itself: the source is never overwritten")
    assert (tmp_path / name).read_bytes() == before


def test_outputs_may_not_replace_inputs(utterances, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(utterances[0], src / "a.wav")
    shutil.copy(utterances[1], tmp_path / "ref.wav")
    with pytest.raises(ConfigError, match=r"out=.*in is the src folder: outputs would mix with the sources"):
        run(config(ckpt="./no/such/bundle", src=src, out=src))
    with pytest.raises(ConfigError, match=r"would replace the ref file .*ref\.wav"):
        run(
            config(
                ckpt="./no/such/bundle", src=src / "a.wav", ref=tmp_path / "ref.wav", out=tmp_path / "ref.wav"
            )
        )
    # a hard link is the same file under another name
    (tmp_path / "o").mkdir()
    os.link(src / "a.wav", tmp_path / "o" / "a.wav")
    with pytest.raises(ConfigError, match=r"would replace the src file .*in/a\.wav"):
        run(config(ckpt="./no/such/bundle", src=src, out=tmp_path / "o", overwrite=True))
    (tmp_path / "notes.flac").write_text("an existing file that is not a folder")
    with pytest.raises(ConfigError, match=r"out=.*notes\.flac is an existing file that is not a \.wav"):
        run(config(ckpt="./no/such/bundle", src=src / "a.wav", out=tmp_path / "notes.flac"))


def test_outputs_inside_src_are_not_converted_again(tiny_bundle, utterances, tmp_path, caplog):
    """out= inside src, and the default out (under outputs/) inside src: the next run converts the
    recordings only."""
    src = tmp_path / "project"
    (src / "rec").mkdir(parents=True)
    shutil.copy(utterances[0], src / "rec" / "a.wav")
    shutil.copy(utterances[1], src / "b.wav")
    for _ in range(2):
        summary = run(config(ckpt=tiny_bundle, src=src, out=src / "converted", overwrite=True))
        assert summary["converted"] == 2
    assert sorted(str(p.relative_to(src)) for p in src.rglob("*.wav")) == [
        "b.wav",
        "converted/b.wav",
        "converted/rec/a.wav",
        "rec/a.wav",
    ]
    shutil.rmtree(src / "converted")
    outputs = {"paths.log_dir": src / "outputs"}
    run(config(ckpt=tiny_bundle, src=src, **outputs, **{"paths.output_dir": src / "outputs" / "infer" / "1"}))
    with caplog.at_level(logging.INFO, logger="vc.infer"):
        again = run(
            config(
                ckpt=tiny_bundle, src=src, **outputs, **{"paths.output_dir": src / "outputs" / "infer" / "2"}
            )
        )
    assert again["converted"] == 2 and "left out 2 file(s) below" in caplog.text
    (src / "rec" / "a.wav").unlink()
    (src / "b.wav").unlink()
    with pytest.raises(AudioError, match=r"src=.*project: its only audio files are outputs"):
        run(
            config(
                ckpt=tiny_bundle, src=src, **outputs, **{"paths.output_dir": src / "outputs" / "infer" / "3"}
            )
        )


# ------------------------------------------------------------------------------- broken models


@pytest.fixture(scope="module")
def lightning_ckpt(tiny_models, tmp_path_factory) -> Path:
    import lightning.pytorch as pl

    from vc.model.module import VCLitModule

    module = VCLitModule(
        pretrained=str(tiny_models.speecht5),
        vocoder=str(tiny_models.vocoder),
        speaker_encoder=str(tiny_models.xvector),
        generation={"threshold": 3.0, "minlenratio": 0.0, "maxlenratio": 2.0},
    )
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.strategy.connect(module)
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


def _cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


SPEAKER_HPARAMS = "speaker_encoder/hyperparams.yaml"
BUNDLE_DAMAGE = {
    # case: (file in the bundle, how it is damaged, the file or folder named, what the message says)
    "weights-cut-short": ("speecht5/model.safetensors", _cut, None, "not a complete safetensors file"),
    "vocoder-overwritten": (
        "vocoder/model.safetensors",
        lambda p: p.write_bytes(os.urandom(999)),
        None,
        "complete",
    ),
    "config-json-cut": ("speecht5/config.json", _cut, None, "not valid JSON"),
    "vc-yaml-damaged": ("vc.yaml", lambda p: p.write_text("audio: [\n  x: {"), None, "not valid YAML"),
    "vc-yaml-not-settings": (
        "vc.yaml",
        lambda p: p.write_text("- a list\n"),
        None,
        "not the bundle's settings",
    ),
    "speaker-encoder-cut": (
        "speaker_encoder/embedding_model.ckpt",
        _cut,
        None,
        "not a complete PyTorch archive",
    ),
    "speaker-hparams-cut": (SPEAKER_HPARAMS, lambda p: _cut(p, 0.3), "speaker_encoder", "does not load"),
    "default-speaker-cut": ("default_speaker.npy", _cut, None, "not a complete .npy array"),
    "weights-missing": (
        "speecht5/model.safetensors",
        Path.unlink,
        "speecht5",
        "SpeechT5 model does not load",
    ),
}


@pytest.mark.parametrize("case", BUNDLE_DAMAGE)
def test_a_damaged_bundle_names_the_file_and_says_export_again(case, tiny_bundle, utterances, tmp_path):
    name, damage, named, says = BUNDLE_DAMAGE[case]
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    damage(bundle / name)
    with pytest.raises(ConfigError) as err:
        run(config(ckpt=bundle, src=utterances[0], ref=utterances[1], out=tmp_path / "o.wav"))
    message = str(err.value)
    assert message.startswith(f"{bundle / (named or name)}: ") and says in message, message
    assert f"Export the bundle {bundle} again" in message or "Export the bundle again" in message, message
    assert "\n" not in message and not (tmp_path / "o.wav").exists()


CKPT_DAMAGE = {
    "cut-short": (_cut, "not a complete PyTorch archive (cut short or overwritten)"),
    "random-bytes": (lambda p: p.write_bytes(os.urandom(5000)), "not a complete PyTorch archive"),
    "pickle-like": (
        lambda p: p.write_bytes(b"\x80\x02" + os.urandom(5000)),
        "not a complete PyTorch archive",
    ),
    "empty": (lambda p: p.write_bytes(b""), "empty (0 bytes)"),
}


@pytest.mark.parametrize("case", CKPT_DAMAGE)
def test_a_damaged_checkpoint_says_pick_another_never_weights_only(
    case, lightning_ckpt, utterances, tmp_path
):
    damage, says = CKPT_DAMAGE[case]
    ckpt = tmp_path / "epoch=3.ckpt"
    shutil.copy(lightning_ckpt, ckpt)
    damage(ckpt)
    with pytest.raises(ConfigError) as err:
        run(config(ckpt=ckpt, src=utterances[0], ref=utterances[1], out=tmp_path / "o.wav"))
    message = str(err.value)
    assert message.startswith(f"ckpt={ckpt}: {says}") and "Pick another checkpoint" in message, message
    assert "weights_only" not in message and "\n" not in message


def test_cli_damaged_bundle_and_checkpoint_one_line_each(tiny_bundle, lightning_ckpt, utterances, tmp_path):
    shutil.copytree(tiny_bundle, tmp_path / "bundle")
    _cut(tmp_path / "bundle" / "speecht5" / "model.safetensors")
    (tmp_path / "random.ckpt").write_bytes(b"\x80\x02" + os.urandom(5000))
    shutil.copy(utterances[0], tmp_path / "x.wav")
    line = one_line_error(cli(tmp_path, "ckpt=bundle", "src=x.wav", "device=cpu"))
    assert line.startswith(
        "error: bundle/speecht5/model.safetensors: not a complete safetensors file (cut short"
    )
    assert "Export the bundle again" in line and "safetensors_rust" not in line
    line = one_line_error(cli(tmp_path, "ckpt=random.ckpt", "src=x.wav", "device=cpu"))
    assert (
        line.startswith("error: ckpt=random.ckpt: not a complete PyTorch archive")
        and "weights_only" not in line
    )


# ------------------------------------------------------------------------- smaller things


def test_a_cut_short_wav_warns_and_converts(tiny_bundle, utterances, tmp_path, caplog):
    data = utterances[0].read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="vc.audio"):
        summary = run(config(ckpt=tiny_bundle, src=cut, out=tmp_path / "o.wav"))
    assert summary["converted"] == 1
    full = sf.info(str(utterances[0])).duration
    assert re.search(
        rf"cut\.wav: the file is shorter than its header says \(1\.\d\d s of {full:.2f} s\)", caplog.text
    )


def test_channels_that_cancel_are_said_to_cancel(tiny_bundle, utterances, tmp_path):
    wav = sf.read(str(utterances[0]))[0]
    sf.write(str(tmp_path / "inverted.wav"), np.stack([wav, -wav], axis=1), SR)
    with pytest.raises(VCError, match=r"inverted\.wav: its 2 channels cancel out when mixed to mono"):
        run(config(ckpt=tiny_bundle, src=tmp_path / "inverted.wav", out=tmp_path / "o.wav"))


def test_no_real_time_factor_when_nothing_was_converted(tiny_bundle, tmp_path, caplog):
    (tmp_path / "bad.wav").write_text("not audio")
    with caplog.at_level(logging.INFO, logger="vc.infer"), pytest.raises(VCError):
        run(config(ckpt=tiny_bundle, src=tmp_path / "bad.wav", out=tmp_path / "o.wav"))
    assert "converted 0 files (0.0 s of audio) in " in caplog.text and "real-time factor n/a;" in caplog.text


def test_temporaries_of_an_interrupted_run_are_removed(tiny_bundle, utterances, tmp_path):
    """A dead writer's hidden .tmp files go; a live writer's stay."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    dead = [out / f".a.wav.{DEAD_PID}.tmp", out / "sub" / f".b.wav.{DEAD_PID}.tmp"]
    for path in dead:
        path.write_bytes(b"RIFF half a file")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) as writer:
        live = out / f".c.wav.{writer.pid}.tmp"
        live.write_bytes(b"being written")
        try:
            src = tmp_path / "in"
            (src / "sub").mkdir(parents=True)
            shutil.copy(utterances[0], src / "a.wav")
            shutil.copy(utterances[1], src / "sub" / "b.wav")
            assert run(config(ckpt=tiny_bundle, src=src, out=out))["converted"] == 2
            assert [p.exists() for p in dead] == [False, False] and live.exists()
        finally:
            writer.kill()


def test_an_interrupted_bundle_export_is_cleaned_up(tiny_models, tmp_path):
    from vc.model.bundle import export_bundle, load_bundle
    from vc.model.module import VCLitModule

    stale = tmp_path / f".bundle.{DEAD_PID}.tmp"
    (stale / "speecht5").mkdir(parents=True)
    module = VCLitModule(
        pretrained=str(tiny_models.speecht5),
        vocoder=str(tiny_models.vocoder),
        speaker_encoder=str(tiny_models.xvector),
        audio=OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "conf" / "audio" / "speecht5.yaml")),
    )
    with pytest.raises(KeyError):  # an export that fails midway leaves nothing either
        export_bundle(VCLitModule(pretrained=str(tiny_models.speecht5)), tmp_path / "bundle")
    export_bundle(module, tmp_path / "bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert load_bundle(tmp_path / "bundle").vocoder is not None
