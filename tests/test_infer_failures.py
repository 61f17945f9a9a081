"""What a hurried user meets with infer.py, through the real command line where they meet it.

File names Hydra's grammar cannot take as typed, outputs that cannot be written (a full disk, a
read-only folder, a file where a folder should be), outputs that overlap the inputs, damaged
bundles and checkpoints, cut-short and cancelling audio, and what interrupted runs leave behind.
The expectation is the same everywhere: one line naming the input and the fix, exit status 2,
every file that can be converted is converted, and no temporary file is left.
"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from tests.conftest import REPO_ROOT, compose_config

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
