"""The local endpoint over real HTTP on 127.0.0.1: in-process server threads on ephemeral ports, and
``python infer.py mode=serve`` in a subprocess where the command line, its log or its exit matter."""

from __future__ import annotations

import base64
import io
import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vc.converter import Conversion
from vc.errors import ConfigError
from vc.sagemaker import PROJECT_ROOT
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


def call(
    url: str, body: bytes | None = None, content_type: str = "application/json", **headers: str
) -> tuple[int, dict]:
    if body is not None:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def good_body(**extra) -> bytes:
    return json.dumps(
        {"src_wav_b64": wav_file_b64(), "ref_wav_b64": wav_file_b64(1.0, 44100, 2), **extra}
    ).encode()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    client: str  # the client's address as the server logs it, host:port

    def error(self) -> str:
        assert self.headers["content-type"] == "application/json", self
        return json.loads(self.body)["error"]


def raw_http(port: int, data: bytes, *, half_close: bool = False, host: str = "127.0.0.1") -> Reply:
    """Send ``data`` as it is and read until the server closes the connection (it answers each
    connection once). ``half_close``: shut our sending side after the data, as a client that
    gave up on the rest of its body."""
    with socket.create_connection((host, port), timeout=60) as sock:
        client = "{}:{}".format(*sock.getsockname()[:2])
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(1 << 16):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return Reply(int(status_line.split()[1]), headers, body, client)


def request_bytes(
    method: str, path: str = "/invocations", body: bytes = b"", headers: str | None = None
) -> bytes:
    """A raw HTTP/1.1 request; ``headers`` replaces the default Content-Type and Content-Length lines."""
    if headers is None:
        headers = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode() + body


def hang_up(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a client killed or timed out does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


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


def test_methods_the_paths_do_not_take_get_405_with_allow_and_head_is_get_without_a_body():
    with serving(SlowEcho(0.0, 0.0)) as server:
        port = server.server_address[1]
        routes = {"/invocations": "POST", "/ping": "GET, HEAD", "/stats": "GET, HEAD"}
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW", "GET", "POST", "HEAD"):
            for path, allow in routes.items():
                if method in allow:
                    continue
                reply = raw_http(port, request_bytes(method, path, b"{}"))
                assert (reply.status, reply.headers["allow"]) == (405, allow), (method, path)
                if method == "HEAD":
                    assert reply.body == b""
                else:
                    assert f"{method} is not allowed on {path}" in reply.error()
            reply = raw_http(port, request_bytes(method, "/nope", b"{}"))
            assert reply.status == 404 and "allow" not in reply.headers, method
            assert reply.body == b"" if method == "HEAD" else "no /nope" in reply.error()
        for path in ("/ping", "/stats"):
            get, head = (raw_http(port, request_bytes(m, path, headers="")) for m in ("GET", "HEAD"))
            assert get.status == head.status == 200 and head.body == b""
            assert head.headers["content-type"] == "application/json"
            if path == "/ping":
                assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.body))
        assert call(f"{server.url}/ping?probe=1") == (200, {"status": "ok"})


def chunked(body: bytes, size: int = 1000) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_every_client_mistake_is_a_4xx_json_reply_and_the_server_keeps_serving():
    deep = b"[" * 100_000 + b"]" * 100_000
    body = good_body()
    src = wav_file_b64()
    contradiction = json.dumps({"src_wav_b64": src, "parameters": {"minlenratio": 10, "maxlenratio": 0.5}})
    cases = {
        "JSON nested 100,000 deep": (request_bytes("POST", body=deep), 400, "nested too deeply"),
        "invalid UTF-8": (request_bytes("POST", body=b'{"src_wav_b64": "\xff"}'), 400, "not valid JSON"),
        "a JSON list": (request_bytes("POST", body=b"[1, 2]"), 400, "must be an object"),
        "NaN": (request_bytes("POST", body=b'{"src_wav_b64": NaN}'), 400, "NaN is not a JSON number"),
        "contradicting bounds": (
            request_bytes("POST", body=contradiction.encode()),
            400,
            "minlenratio=10 and maxlenratio=0.5 contradict",
        ),
        "base64 with garbage": (
            request_bytes("POST", body=json.dumps({"src_wav_b64": src[:50] + "#" + src[50:]}).encode()),
            400,
            "not valid base64",
        ),
        "no Content-Length": (
            request_bytes("POST", body=b"{}", headers="Content-Type: application/json\r\n"),
            411,
            "Content-Length",
        ),
        "a negative Content-Length": (request_bytes("POST", headers="Content-Length: -5\r\n"), 400, "'-5'"),
        "a Content-Length in words": (request_bytes("POST", headers="Content-Length: ten\r\n"), 400, "'ten'"),
        "a signed Content-Length": (
            request_bytes("POST", body=b"{}", headers="Content-Length: +2\r\n"),
            400,
            "not a size",
        ),
        "two Content-Lengths": (
            request_bytes("POST", body=b"{}", headers="Content-Length: 2\r\nContent-Length: 3\r\n"),
            400,
            "not a size",
        ),
        "a 40-digit Content-Length": (
            request_bytes("POST", headers=f"Content-Length: {'9' * 40}\r\n"),
            413,
            "over the 1 MB limit",
        ),
        "a body over the limit": (
            request_bytes("POST", body=b" " * 1_500_000),
            413,
            "1.43 MB is over the 1 MB",
        ),
        "a body shorter than its Content-Length": (
            request_bytes("POST", headers="Content-Length: 100\r\n") + b"{}",
            400,
            "ended after 2 of its 100 bytes",
        ),
        "a bad chunk size": (
            request_bytes("POST", headers="Transfer-Encoding: chunked\r\n") + b"zz\r\n{}\r\n0\r\n\r\n",
            400,
            "bad chunk size",
        ),
        "a chunked body cut short": (
            request_bytes("POST", headers="Transfer-Encoding: chunked\r\n") + b"10\r\n{}",
            400,
            "ended after 2 of its 16 bytes",
        ),
        "a chunked body over the limit": (
            request_bytes("POST", headers="Transfer-Encoding: chunked\r\n")
            + chunked(b" " * 1_500_000, 1 << 16),
            413,
            "over the 1 MB limit",
        ),
        "Transfer-Encoding gzip": (
            request_bytes("POST", body=b"{}", headers="Transfer-Encoding: gzip\r\n"),
            400,
            "'gzip' is not supported",
        ),
        "Content-Encoding gzip": (
            request_bytes(
                "POST",
                body=b"{}",
                headers="Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n",
            ),
            415,
            "'gzip' is not supported",
        ),
        "a form, as curl -d sends": (
            request_bytes(
                "POST",
                body=b"{}",
                headers="Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 2\r\n",
            ),
            415,
            "Content-Type: application/json",
        ),
        "asking for audio back": (
            request_bytes("POST", body=body, headers=f"Accept: audio/wav\r\nContent-Length: {len(body)}\r\n"),
            406,
            "audio/wav",
        ),
        "a 70 kB URL": (request_bytes("GET", "/" + "a" * 70_000, headers=""), 414, "URI Too Long"),
        "a TLS hello": (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n",
            400,
            "Bad HTTP/0.9 request",
        ),
        "HTTP/2.0": (b"GET /ping HTTP/2.0\r\n\r\n", 400, "Invalid HTTP version (2.0). Use HTTP/1.1"),
        "120 headers": (request_bytes("GET", "/ping", headers="X-A: 1\r\n" * 120), 431, "Too many headers"),
    }
    with serving(SlowEcho(0.0, 0.0), max_request_mb=1) as server:
        port = server.server_address[1]
        for name, (data, status, words) in cases.items():
            reply = raw_http(port, data, half_close=name.endswith("cut short") or "shorter" in name)
            assert reply.status == status, (name, reply)
            assert words in reply.error(), (name, reply)
        assert call(f"{server.url}/invocations", good_body())[0] == 200
        assert call(f"{server.url}/ping")[0] == 200


def test_what_real_clients_send_is_taken():
    body = good_body()
    wrapped = json.loads(body)
    wrapped["src_wav_b64"] = "\n".join(wrapped["src_wav_b64"][i : i + 76] for i in range(0, 20_000, 76))
    with serving(SlowEcho(0.0, 0.0)) as server:
        port, url = server.server_address[1], f"{server.url}/invocations"
        reply = raw_http(
            port, request_bytes("POST", headers="Transfer-Encoding: chunked\r\n") + chunked(body)
        )
        assert reply.status == 200 and reply.headers["content-type"] == "application/json", reply
        assert call(url, body, Accept="text/html,application/xhtml+xml,*/*;q=0.8")[0] == 200
        assert call(url, body, "application/json; charset=utf-8")[0] == 200
        assert call(url, json.dumps(wrapped).encode())[0] == 200  # `base64 file` wraps at 76 characters


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


def test_load_script_counts_cut_off_replies_as_failures():
    """A server that dies mid-reply: the load test reports failures instead of crashing."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def cut_off_replies(count: int) -> None:
        for _ in range(count):  # the warm-up, two /stats and four requests
            conn, _ = listener.accept()
            with conn:
                conn.recv(1 << 16)
                conn.sendall(b'HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\n{"wav')

    thread = threading.Thread(target=cut_off_replies, args=(7,), daemon=True)
    thread.start()
    with listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        result = bench(url, b"{}", clients=2, requests=4, timeout=30, max_seconds=60)
        thread.join(30)
    assert (result["ok"], result["failed"]) == (0, 4)
    assert "IncompleteRead" in result["errors"][0]


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
        # the request's bound against the bundle's own (maxlenratio 2): refused, naming both
        status, reply = call(url, tiny_body(parameters={"minlenratio": 5}))
        assert status == 400 and "minlenratio=5.0 is above generation.maxlenratio=2.0" in reply["error"]
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


# ---------------------------------------------------------------- python infer.py mode=serve


def free_port(*hosts: str) -> int:
    """A port free on every one of ``hosts`` (a server bound to one must not be reached on another)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET6 if ":" in hosts[0] else socket.AF_INET) as first:
            first.bind((hosts[0], 0))
            port = first.getsockname()[1]
            try:
                for host in hosts[1:]:
                    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as other:
                        other.bind((host, port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no port free on all of {hosts}")


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    url: str
    folder: Path

    def output(self) -> str:
        """What the server wrote so far: stdout (the log) and stderr."""
        return (self.folder / "stdout.txt").read_text() + (self.folder / "stderr.txt").read_text()

    def stats(self) -> dict:
        return call(f"{self.url}/stats")[1]

    def wait_for(self, condition, what: str, tries: int = 600) -> None:
        """Poll ``condition()`` every 0.1 s, at most ``tries`` times."""
        for _ in range(tries):
            if condition():
                return
            assert self.proc.poll() is None, f"the server exited while waiting for {what}:\n{self.output()}"
            time.sleep(0.1)
        raise AssertionError(f"no {what}:\n{self.output()}")

    def stop(self) -> int:
        """SIGTERM; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


@contextmanager
def served_by_cli(bundle: Path, folder: Path, *overrides: str, host: str = "127.0.0.1"):
    """``python infer.py mode=serve ckpt=<bundle> serve.host=<host> serve.port=<free> <overrides>``,
    ready to answer; killed on exit if it is still running."""
    port = free_port(host, "127.0.0.1") if host != "127.0.0.1" else free_port(host)
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "infer.py",
        "mode=serve",
        f"ckpt={bundle}",
        f"serve.host={host}",
        f"serve.port={port}",
        f"hydra.run.dir={folder / 'run'}",
        *overrides,
    ]
    with open(folder / "stdout.txt", "w") as out, open(folder / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=out, stderr=err)
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    server = ServerProcess(proc, port, url, folder)

    def ready() -> bool:
        try:
            return call(f"{url}/ping")[0] == 200
        except OSError:
            return False

    try:
        server.wait_for(ready, "answer to /ping", tries=3000)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def valid_conversion(status: int, reply: dict) -> bool:
    if status != 200:
        return False
    wav, sr = sf.read(io.BytesIO(base64.b64decode(reply["wav_b64"])))
    return sr == reply["sample_rate"] == 16000 and wav.ndim == 1 and len(wav) > 0


def silent_body(megabytes: float) -> bytes:
    seconds = megabytes * 1024 * 1024 * 3 / 4 / 32000  # base64 of 16-bit 16 kHz samples
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * 16000), np.int16), 16000, format="WAV")
    return json.dumps({"src_wav_b64": base64.b64encode(buf.getvalue()).decode()}).encode()


def test_every_serve_setting_takes_effect_from_the_command_line(tiny_bundle, tmp_path):
    # serve.host and serve.port: where it answers (serve.host=::1 below)
    settings = ("serve.max_request_mb=20", "serve.max_batch_size=2", "serve.max_wait_ms=60000")
    with served_by_cli(tiny_bundle, tmp_path, *settings) as server:
        url = f"{server.url}/invocations"
        # serve.max_request_mb: 8.7 MB is read and checked (silent audio), 21 MB is over its 20 MB
        big = silent_body(8.7)
        assert len(big) > 8.7 * 1024 * 1024
        status, reply = call(url, big)
        assert status == 400 and "silent" in reply["error"], reply
        status, reply = call(url, b" " * (21 * 1024 * 1024))
        assert status == 413 and "over the 20 MB limit" in reply["error"], reply
        # serve.max_wait_ms=60000 keeps a first request waiting for a partner; serve.max_batch_size=2
        # sends the batch off as soon as the second arrives (the clients give up after 30 s)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(call, url, tiny_body())
            server.wait_for(lambda: server.stats()["in_flight"] == 1, "first request in flight")
            second = pool.submit(call, url, tiny_body())
            assert valid_conversion(*first.result()) and valid_conversion(*second.result())
        assert server.stats()["batch_sizes"] == {"2": 1}
        assert server.stop() == 0
    assert "20 MB requests" in server.output()


def test_serve_host_decides_where_it_listens(tiny_bundle, tmp_path):
    try:
        free_port("::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with served_by_cli(tiny_bundle, tmp_path, host="::1") as server:
        assert server.url.startswith("http://[::1]:")
        assert call(f"{server.url}/ping") == (200, {"status": "ok"})
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/ping", timeout=10)
        assert server.stop() == 0


def test_a_port_in_use_or_a_host_it_cannot_take_is_a_config_error(tiny_bundle):
    from tests.conftest import compose_config
    from vc.serve import run

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for override, words in (
            (f"serve.port={port}", "Address already in use"),
            ("serve.port=70000", "port must be 0-65535"),
            ("serve.host=192.0.2.1", "assign requested address"),  # an address of no interface here
        ):
            cfg = compose_config("infer", ["mode=serve", f"ckpt={tiny_bundle}", "device=cpu", override])
            with pytest.raises(ConfigError, match="cannot listen on") as info:
                run(cfg)
            assert (
                words in str(info.value)
                and "serve.host" in str(info.value)
                and "serve.port" in str(info.value)
            )


def test_client_errors_and_hang_ups_are_one_log_line_each_without_a_traceback(tiny_bundle, tmp_path):
    # a lone request waits up to 60 s for a batch to fill: in flight for as long as the test needs
    with served_by_cli(tiny_bundle, tmp_path, "serve.max_wait_ms=60000") as server:
        port = server.port
        refused = {  # what a client sends -> what its log line says
            request_bytes("PUT", body=b"{}"): "PUT /invocations 405: PUT is not allowed",
            request_bytes("POST", body=b"[" * 50_000): "POST /invocations 400: the body is not valid JSON",
            request_bytes("POST", headers="Content-Length: -1\r\n"): "POST /invocations 400: Content-Length",
            request_bytes("GET", "/admin", headers=""): "GET /admin 404: no /admin",
            b"HELLO\r\n\r\n": "400: Bad request",
        }
        expected = {}
        for data, words in refused.items():
            reply = raw_http(port, data)
            assert 400 <= reply.status < 500 and reply.error()
            expected[reply.client] = words
        # clients that hang up in the middle of their body, and while their request waits for its batch
        body = tiny_body()
        data = request_bytes("POST", body=body)
        for sent in (len(data) - len(body) // 2, len(data)):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            expected["{}:{}".format(*sock.getsockname()[:2])] = "hung up"
            sock.sendall(data[:sent])
            server.wait_for(lambda: server.stats()["in_flight"] == 1, "the request in flight")
            hang_up(sock)
            if sent < len(data):
                server.wait_for(lambda: server.stats()["in_flight"] == 0, "the cut request dropped")
        assert server.stop() == 0  # converts the waiting request and finds its client gone
    output = server.output()
    assert "Traceback" not in output, output
    for client, words in expected.items():
        lines = [line for line in output.splitlines() if f"{client} " in line or f"{client}:" in line]
        assert len(lines) == 1 and words in lines[0], (client, words, lines)


@pytest.mark.slow
def test_sigterm_answers_every_accepted_request_before_exiting(tiny_bundle, tmp_path):
    """Three trials: SIGTERM while 6 requests wait for their batch and a 7th is still sending its
    body. It stops accepting connections, every client gets its whole reply, the exit status is 0."""
    clients = 6
    body = tiny_body()
    head = request_bytes("POST", body=body)[: -len(body)]
    for trial in range(3):
        # the batch would wait 60 s to fill up: the signal must close it at once
        settings = (f"serve.max_batch_size={clients + 2}", "serve.max_wait_ms=60000")
        with served_by_cli(tiny_bundle, tmp_path / f"trial{trial}", *settings) as server:
            slow = socket.create_connection(("127.0.0.1", server.port), timeout=60)
            slow.sendall(head + body[: len(body) // 2])
            with ThreadPoolExecutor(clients) as pool:
                replies = [pool.submit(call, f"{server.url}/invocations", body) for _ in range(clients)]
                server.wait_for(lambda: server.stats()["in_flight"] == clients + 1, "all requests in flight")
                server.proc.send_signal(signal.SIGTERM)
                server.wait_for(lambda: "signal 15" in server.output(), "the signal logged")
                server.wait_for(lambda: not accepts_connections(server.port), "the port closed")
                slow.sendall(body[len(body) // 2 :])
                received = b""
                while chunk := slow.recv(1 << 16):
                    received += chunk
                slow.close()
                results = [reply.result() for reply in replies]
            assert server.proc.wait(timeout=120) == 0
        assert all(valid_conversion(*result) for result in results), (trial, results)
        status_line, _, rest = received.partition(b"\r\n")
        assert b" 200 " in status_line, (trial, received[:300])
        assert valid_conversion(200, json.loads(rest.partition(b"\r\n\r\n")[2])), trial
        assert "Traceback" not in server.output()


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True
