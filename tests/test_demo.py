"""The web demo: the real command line (``python infer.py mode=demo``) on a free port of 127.0.0.1,
driven through ``gradio_client`` and through a real headless Chromium.

The app runs once for the module, on the tiny bundle (random weights: at the bundle's threshold
0.5 it stops after one step; at threshold 3, never reached, every chunk runs to maxlenratio 2).
``VC_DEMO_SCREENSHOT=docs/assets/demo.png python -m pytest tests/test_demo.py -k browser``
regenerates the README's screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("gradio", reason='the demo extra is not installed (pip install -e ".[demo]")')
gradio_client = pytest.importorskip(
    "gradio_client", reason='the demo extra is not installed (pip install -e ".[demo]")'
)

ROOT = Path(__file__).resolve().parents[1]
SR = 16_000
# the app refuses clips longer than this (demo.max_seconds), so a "too long" file stays small
MAX_SECONDS = 5
STARTUP_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tone(path: Path, seconds: float, amplitude: float = 0.3) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    sf.write(str(path), (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)
    return path


class App:
    """The demo in a subprocess: its URL and its terminal output so far."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self):
        return gradio_client.Client(self.url, verbose=False)


@pytest.fixture(scope="module")
def app(tiny_bundle, tmp_path_factory):
    """``python infer.py mode=demo ckpt=<tiny bundle>`` on a free port, stopped after the module."""
    work = tmp_path_factory.mktemp("demo")
    port = free_port()
    log = work / "terminal.log"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        # Gradio's cache of uploads and outputs: inside the test's folder, not /tmp/gradio
        "GRADIO_TEMP_DIR": str(work / "gradio"),
    }
    # a path relative to where the command runs, as users type it (and as the page shows it)
    (work / "tiny_bundle").symlink_to(tiny_bundle, target_is_directory=True)
    command = [
        sys.executable,
        str(ROOT / "infer.py"),
        "mode=demo",
        "ckpt=tiny_bundle",
        f"demo.port={port}",
        f"demo.max_seconds={MAX_SECONDS}",
        "device=cpu",
        "threads=1",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + STARTUP_S
    while "Running on local URL" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the demo did not start (exit status {proc.poll()}):\n{log.read_text()}")
        time.sleep(0.5)
    yield App(proc, url, log)
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def src(synthetic_arctic) -> Path:
    return synthetic_arctic / "cmu_us_sya_arctic" / "wav" / "arctic_a0001.wav"


@pytest.fixture(scope="module")
def ref(synthetic_arctic) -> Path:
    return synthetic_arctic / "cmu_us_syb_arctic" / "wav" / "arctic_a0001.wav"


def convert(client, src, ref=None, threshold=3.0, minlenratio=0.0, maxlenratio=2.0, endpoint="/convert"):
    handle = gradio_client.handle_file
    return client.predict(
        handle(str(src)),
        None if ref is None else handle(str(ref)),
        threshold,
        minlenratio,
        maxlenratio,
        api_name=endpoint,
    )


def test_a_good_file_converts_to_the_converters_16k_mono_wav(app, src, ref, tiny_bundle, one_thread):
    """The WAV the page serves is the converter's own output (not re-normalised on the way), with
    its mel picture and the result line: runaway warning at threshold 3, the stop token at 0.5
    with the bundle's default speaker."""
    from PIL import Image

    from vc.converter import VoiceConverter

    client = app.client()
    wav_path, picture, line = convert(client, src, ref)
    info = sf.info(wav_path)
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    expected = VoiceConverter.from_pretrained(str(tiny_bundle), device="cpu").convert(
        str(src), ref=str(ref), threshold=3.0, minlenratio=0.0, maxlenratio=2.0
    )
    served = sf.read(wav_path, dtype="float32")[0]
    assert len(served) == len(expected.wav)
    np.testing.assert_allclose(served, expected.wav, atol=2e-3)
    assert (
        f"{expected.meta['src_seconds']:.2f} s of source -> {expected.meta['out_seconds']:.2f} s converted"
        in line
    )
    assert "real-time factor" in line
    assert "warning: 1 of 1 chunk(s) ran to the length limit without a stop token (maxlenratio=2)" in line
    with Image.open(picture) as image:
        # source and converted side by side
        assert image.width > 1.5 * image.height

    wav_path, _, line = convert(client, src, None, threshold=0.5)
    assert sf.info(wav_path).samplerate == SR
    assert line.endswith("stopped by the stop token.")


def broken(folder: Path) -> Path:
    (folder / "broken.wav").write_text("not audio")
    return folder / "broken.wav"


@pytest.mark.parametrize(
    "make, field, message",
    [
        (broken, "src", "source broken.wav: not a readable audio file"),
        (
            lambda d: tone(d / "silent.wav", 1.0, amplitude=0.0),
            "src",
            "source silent.wav: the audio is silent",
        ),
        (
            lambda d: tone(d / "short.wav", 0.05),
            "src",
            "source short.wav: 0.050 s is too short; at least 0.10 s is needed",
        ),
        (
            lambda d: tone(d / "long.wav", MAX_SECONDS + 1),
            "src",
            f"source long.wav: {MAX_SECONDS + 1:.1f} s is too long; at most {MAX_SECONDS} s is accepted here",
        ),
        (
            lambda d: tone(d / "brief.wav", 0.2),
            "ref",
            "reference brief.wav: 0.200 s is too short; at least 0.25 s is needed",
        ),
    ],
    ids=["corrupt", "silent", "too-short", "too-long", "short-reference"],
)
def test_a_bad_upload_shows_the_converters_message(app, src, tmp_path, make, field, message):
    """The page's check step answers with the converter's message (a gr.Error, no traceback in the
    terminal), and the app goes on serving."""
    bad = make(tmp_path)
    client = app.client()
    args = (bad, None) if field == "src" else (src, bad)
    with pytest.raises(gradio_client.exceptions.AppError, match=re.escape(message)):
        convert(client, *args, endpoint="/check")
    assert convert(client, *args)[2].startswith(f"error: {message}")
    assert "Traceback" not in app.output()
    assert sf.info(convert(client, src)[0]).samplerate == SR


def test_concurrent_calls_are_served_in_shared_batches(app, src, ref, tmp_path):
    """Four calls at once, one of them a corrupt file: the three good ones convert, the bad one gets
    its message, and calls share batches (the first runs alone while the others queue)."""
    handle = gradio_client.handle_file
    client = app.client()
    jobs = [
        client.submit(handle(str(s)), handle(str(ref)), 3.0, 0.0, 2.0, api_name="/convert")
        for s in (src, src, broken(tmp_path), src)
    ]
    results = [job.result(timeout=300) for job in jobs]
    bad = results.pop(2)
    assert bad[0] is None and bad[2].startswith("error: source broken.wav: not a readable audio file")
    for wav_path, _, line in results:
        assert sf.info(wav_path).samplerate == SR and "real-time factor" in line
    batches = [int(re.search(r"a batch of (\d+) request", line).group(1)) for _, _, line in results]
    assert max(batches) > 1, batches


def chromium() -> tuple[str, str] | None:
    """Paths of a Chromium browser and its chromedriver, if both are installed."""
    browser = next(
        (
            shutil.which(name)
            for name in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(name)
        ),
        None,
    )
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(
    chromium() is None,
    reason="no Chromium with chromedriver installed (Debian: apt-get install chromium chromium-driver)",
)
def test_browser_uploads_converts_and_plays(app, src, ref, tmp_path):
    """Headless Chromium loads the page, uploads a source and a reference, sets threshold 3, clicks
    Convert and waits for the converted audio: the browser itself loads the WAV (its duration is
    the result line's), then the mel picture; the screenshot goes to tmp_path (and to
    $VC_DEMO_SCREENSHOT when set)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    try:
        wait = WebDriverWait(driver, 120)
        driver.get(app.url)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#source input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#source input[type=file]").send_keys(str(src))
        driver.find_element(By.CSS_SELECTOR, "#reference input[type=file]").send_keys(str(ref))
        # an upload is shown as a waveform with a download link once it reached the server
        for box in ("#source", "#reference"):
            wait.until(
                lambda d, box=box: d.find_elements(By.CSS_SELECTOR, f"{box} a[data-testid=download-link]")
            )
        threshold = driver.find_element(By.CSS_SELECTOR, "#threshold input[type=number]")
        threshold.send_keys(Keys.CONTROL, "a")
        threshold.send_keys("3", Keys.TAB)
        driver.find_element(By.CSS_SELECTOR, "#convert").click()
        audio = wait.until(
            lambda d: next(
                (a for a in d.find_elements(By.CSS_SELECTOR, "#converted audio") if a.get_attribute("src")),
                None,
            )
        )
        # readyState >= 1: the browser fetched and parsed the WAV
        duration = wait.until(
            lambda d: d.execute_script("return arguments[0].readyState >= 1 && arguments[0].duration", audio)
        )
        line = driver.find_element(By.CSS_SELECTOR, "#result textarea").get_attribute("value")
        out_seconds = float(re.search(r"-> ([\d.]+) s converted", line).group(1))
        assert duration == pytest.approx(out_seconds, abs=0.02)
        assert "warning: 1 of 1 chunk(s) ran to the length limit" in line
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#mels img[src]"))
        wait.until(lambda d: d.execute_script("return document.querySelector('#mels img').complete"))
        # the whole page in the picture: the window as tall as the page (plus the window's own bars)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        inner = driver.execute_script("return window.innerHeight")
        driver.set_window_size(1280, height + driver.get_window_size()["height"] - inner)
        shot = tmp_path / "demo.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size[0] >= 1000
    if os.environ.get("VC_DEMO_SCREENSHOT"):
        Path(os.environ["VC_DEMO_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, os.environ["VC_DEMO_SCREENSHOT"])


def test_gradio_is_imported_only_when_the_demo_runs():
    code = (
        "import sys, vc.infer, vc.demo, vc.serve, vc.converter, vc.sagemaker.inference, vc.evaluate; "
        "print('gradio' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_without_gradio_the_demo_says_how_to_install_it(monkeypatch):
    """Before any model loads (the checkpoint does not exist): one line naming the extra."""
    from tests.conftest import compose_config
    from vc.errors import ConfigError
    from vc.infer import run

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    cfg = compose_config("infer", ["mode=demo", "ckpt=./no/such/bundle"])
    with pytest.raises(
        ConfigError,
        match=re.escape('mode=demo needs Gradio, which is not installed: pip install -e ".[demo]"'),
    ):
        run(cfg)


def test_a_taken_port_is_a_clear_error(app, tiny_bundle):
    """The port the app holds: one line naming the port and the fix (the CLI prints it, exit status 2)."""
    from tests.conftest import compose_config
    from vc.errors import ConfigError
    from vc.infer import run

    port = int(app.url.rstrip("/").rsplit(":", 1)[1])
    cfg = compose_config("infer", ["mode=demo", f"ckpt={tiny_bundle}", f"demo.port={port}", "device=cpu"])
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}: the port is taken") as err:
        run(cfg)
    assert f"demo.port={port + 1}" in str(err.value)
