"""The local endpoint over real HTTP on 127.0.0.1 (ephemeral ports, in-process server threads)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
import soundfile as sf

from vc.converter import Conversion
from vc.errors import ConfigError
from vc.sagemaker.inference import request_payload
from vc.serve import make_server
from vc.serve_bench import bench, check_url, format_result


class SlowEcho:
    """Stands in for VoiceConverter: a fixed cost per call plus a little per item, like a batched GPU."""

    def __init__(self, per_call=0.05, per_item=0.005):
        self.per_call, self.per_item = per_call, per_item

    def convert_many(self, srcs, refs, **generation):
        time.sleep(self.per_call + self.per_item * len(srcs))
        return [Conversion(np.asarray(wav) * 0.5, 16000) for wav, _ in srcs]


def wav_file_b64(seconds=0.5, sr=16000, channels=1, amplitude=0.3) -> str:
    t = np.arange(int(seconds * sr)) / sr
    wav = (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([wav] * channels, axis=1) if channels > 1 else wav, sr, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


@contextmanager
def serving(model, **kwargs):
    """A server on 127.0.0.1:<free port> in a thread; shut down and closed on exit."""
    server = make_server(model, host="127.0.0.1", port=0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.close()
        thread.join(5)


def call(url: str, body: bytes | None = None, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type} if body is not None else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def good_body(**extra) -> bytes:
    return json.dumps(
        {"src_wav_b64": wav_file_b64(), "ref_wav_b64": wav_file_b64(1.0, 44100, 2), **extra}
    ).encode()


def test_ping_valid_request_and_unknown_paths():
    with serving(SlowEcho(0.0, 0.0)) as server:
        assert call(f"{server.url}/ping") == (200, {"status": "ok"})
        status, reply = call(f"{server.url}/invocations", good_body())
        assert status == 200
        wav, sr = sf.read(io.BytesIO(base64.b64decode(reply["wav_b64"])))
        assert sr == 16000 and wav.ndim == 1 and len(wav) == 8000 and reply["sample_rate"] == 16000
        assert call(f"{server.url}/nope")[0] == 404
        assert call(f"{server.url}/nope", b"{}")[0] == 404


def test_bad_requests_get_a_json_error_and_the_server_keeps_serving():
    with serving(SlowEcho(0.0, 0.0), max_request_mb=0.1) as server:
        url = f"{server.url}/invocations"
        bad = {
            "malformed JSON": (b'{"src_wav_b64": ', "application/json", 400, "not valid JSON"),
            "bad base64": (b'{"src_wav_b64": "not base64!"}', "application/json", 400, "not valid base64"),
            "not audio": (
                json.dumps({"src_wav_b64": base64.b64encode(b"GIF89a, not a sound").decode()}).encode(),
                "application/json",
                400,
                "not a readable audio file",
            ),
            "empty audio": (
                json.dumps({"src_wav_b64": wav_file_b64(0.0)}).encode(),
                "application/json",
                400,
                "src_wav_b64: empty audio",
            ),
            "silent audio": (
                json.dumps({"src_wav_b64": wav_file_b64(amplitude=0.0)}).encode(),
                "application/json",
                400,
                "silent",
            ),
            "oversized body": (b"x" * 300_000, "application/json", 413, "over the"),
            "not JSON at all": (b"RIFF....WAVE", "audio/wav", 415, "application/json"),
        }
        for name, (body, content_type, status, words) in bad.items():
            got, reply = call(url, body, content_type)
            assert got == status, name
            assert words in reply["error"], (name, reply)
        small = json.dumps(
            {"src_wav_b64": wav_file_b64(), "ref_wav_b64": wav_file_b64(0.5, 22050, 2)}
        ).encode()
        assert call(url, small)[0] == 200
        assert call(f"{server.url}/ping")[0] == 200


def test_concurrent_requests_all_succeed_and_are_batched():
    with serving(SlowEcho(), max_batch_size=4, max_wait_ms=20) as server:
        url = f"{server.url}/invocations"
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: call(url, good_body()), range(16)))
        assert [status for status, _ in results] == [200] * 16
        sizes = server.batcher.batch_sizes
        assert sum(size * count for size, count in sizes.items()) == 16
        assert max(sizes) > 1 and max(sizes) <= 4
        status, stats = call(f"{server.url}/stats")
        assert status == 200 and stats["requests"] == 16 and stats["batches"] == sum(sizes.values())


def test_generation_parameters_split_batches_but_all_succeed():
    with serving(SlowEcho(), max_batch_size=8, max_wait_ms=50) as server:
        url = f"{server.url}/invocations"
        bodies = [good_body(parameters={"maxlenratio": 2 + i % 2}) for i in range(6)]
        with ThreadPoolExecutor(6) as pool:
            assert [s for s, _ in pool.map(lambda b: call(url, b), bodies)] == [200] * 6


def test_load_script_batching_against_batch_size_one(tmp_path, capsys):
    src, ref = tmp_path / "src.wav", tmp_path / "ref.wav"
    src.write_bytes(base64.b64decode(wav_file_b64(0.5)))
    ref.write_bytes(base64.b64decode(wav_file_b64(1.0, 44100, 2)))
    body = json.dumps(request_payload(src, ref)).encode()
    lines = []
    for max_batch_size in (8, 1):
        with serving(SlowEcho(), max_batch_size=max_batch_size, max_wait_ms=10) as server:
            result = bench(server.url, body, clients=8, requests=32, timeout=30, max_seconds=60)
        assert result["ok"] == 32 and result["failed"] == 0
        assert max(result["batch_sizes"]) <= max_batch_size
        lines.append(format_result(result, f"max_batch_size={max_batch_size}"))
    print("\n".join(lines))
    assert "req/s" in capsys.readouterr().out


def test_load_script_only_targets_this_machine():
    assert check_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert check_url("http://localhost:1") == "http://localhost:1"
    for url in ("http://example.com:8080", "https://127.0.0.1:8080", "http://10.0.0.1:80"):
        with pytest.raises(ConfigError, match="this machine"):
            check_url(url)
    with pytest.raises(ConfigError, match="--clients"):
        bench("http://127.0.0.1:9", b"{}", clients=1000)


# ---------------------------------------------------------------- the tiny bundle


def tiny_body(**extra) -> bytes:
    # maxlenratio 2 keeps each conversion to a few decoder steps
    return json.dumps(
        {
            "src_wav_b64": wav_file_b64(0.6, 44100, 2),
            "ref_wav_b64": wav_file_b64(1.0),
            "parameters": {"maxlenratio": 2},
            **extra,
        }
    ).encode()


@pytest.fixture(scope="module")
def tiny_converter(tiny_bundle):
    from vc.sagemaker.inference import model_fn

    return model_fn(str(tiny_bundle))


def test_endpoint_on_the_tiny_bundle(tiny_converter):
    with serving(tiny_converter, max_batch_size=4, max_wait_ms=50) as server:
        url = f"{server.url}/invocations"
        status, reply = call(url, tiny_body())
        assert status == 200
        wav, sr = sf.read(io.BytesIO(base64.b64decode(reply["wav_b64"])))
        assert sr == 16000 and wav.ndim == 1 and len(wav) > 0
        assert call(url, b"{oops")[0] == 400
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: call(url, tiny_body()), range(6)))
        assert [status for status, _ in results] == [200] * 6
        assert max(server.batcher.batch_sizes) > 1


def test_load_run_on_the_tiny_bundle_batching_against_batch_size_one(tiny_converter, tmp_path, capsys):
    src, ref = tmp_path / "src.wav", tmp_path / "ref.wav"
    src.write_bytes(base64.b64decode(wav_file_b64(2.0, 44100, 2)))
    ref.write_bytes(base64.b64decode(wav_file_b64(1.0)))
    # a threshold no step reaches: every request generates up to maxlenratio, the same work each time
    body = json.dumps(request_payload(src, ref, {"threshold": 5, "maxlenratio": 2})).encode()
    lines = []
    for max_batch_size in (8, 1):
        with serving(tiny_converter, max_batch_size=max_batch_size, max_wait_ms=10) as server:
            result = bench(server.url, body, clients=8, requests=24, timeout=120, max_seconds=120)
        assert result["failed"] == 0
        lines.append(format_result(result, f"tiny bundle, max_batch_size={max_batch_size}"))
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_infer_py_serve_command_stops_cleanly_on_sigterm(tiny_bundle, tmp_path):
    import signal
    import socket
    import subprocess
    import sys

    from vc.sagemaker import PROJECT_ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "infer.py",
        "mode=serve",
        f"ckpt={tiny_bundle}",
        f"serve.port={port}",
        f"hydra.run.dir={tmp_path}",
    ]
    proc = subprocess.Popen(
        cmd, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                assert call(f"http://127.0.0.1:{port}/ping")[0] == 200
                break
            except urllib.error.URLError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.5)
        assert call(f"http://127.0.0.1:{port}/invocations", tiny_body())[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "POST /invocations 200" in proc.stdout.read()
