"""Local HTTP endpoint with SageMaker's container contract: ``GET /ping`` and ``POST /invocations``.

    python infer.py mode=serve ckpt=BUNDLE                 # http://127.0.0.1:8080
    curl -s localhost:8080/invocations -H 'Content-Type: application/json' \\
         -d "{\\"src_wav_b64\\": \\"$(base64 -w0 src.wav)\\", \\"ref_wav_b64\\": \\"$(base64 -w0 ref.wav)\\"}"

The request and response are those of :mod:`vc.sagemaker.inference`, whose functions decode and
encode them here too. Each connection gets a thread (stdlib ``ThreadingHTTPServer``); a request
is decoded and checked on its own thread, so a bad one is answered (4xx, a JSON error) without
touching the model. Good ones go to one batcher thread, which waits up to ``max_wait_ms`` for
up to ``max_batch_size`` requests and converts them with one ``convert_many`` call: the model is
only ever used from that thread, and under load requests share batches. ``GET /stats`` reports
the batch sizes seen. SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from vc.sagemaker.inference import (
    JSON,
    ConversionRequest,
    RequestError,
    error_response,
    input_fn,
    output_fn,
    predict_batch,
)

log = logging.getLogger(__name__)

# a request waiting longer than this for its batch is answered 503 (the server is overloaded or stuck)
REQUEST_TIMEOUT_S = 300.0
# seconds a client may take to send its request before its thread gives up
SOCKET_TIMEOUT_S = 30.0
# an oversized body up to this many times the limit is read and dropped, so the client gets the 413
DRAIN_FACTOR = 8


@dataclass
class _Job:
    request: ConversionRequest
    done: threading.Event = field(default_factory=threading.Event)
    result: object = None


class Batcher:
    """Collects requests from many threads and converts them in batches on one worker thread.

    ``model``: anything with ``convert_many(srcs, refs, **generation)`` (a VoiceConverter).
    A batch closes when it holds ``max_batch_size`` requests or ``max_wait_ms`` after its first.
    """

    def __init__(self, model, *, max_batch_size: int = 8, max_wait_ms: float = 10.0):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError(
                f"max_batch_size={max_batch_size} must be >= 1 and max_wait_ms={max_wait_ms} >= 0"
            )
        self.model = model
        self.max_batch_size = int(max_batch_size)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.batch_sizes: Counter[int] = Counter()
        self._stats_lock = threading.Lock()  # /stats reads from request threads while the worker counts
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="vc-batcher", daemon=True)

    def start(self) -> Batcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in progress and the requests queued before this call, then end the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        # requests that slipped in behind the stop marker get an answer instead of a timeout
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.result = RequestError("the server is shutting down; retry on another instance.", 503)
                job.done.set()

    def submit(self, request: ConversionRequest, timeout: float = REQUEST_TIMEOUT_S):
        """Queue one request and wait for it; returns its ``Conversion`` or raises its error."""
        if not self._thread.is_alive():
            raise RequestError("the server is shutting down; retry on another instance.", 503)
        job = _Job(request)
        self._queue.put(job)
        if not job.done.wait(timeout):
            raise RequestError(
                f"no result within {timeout:.0f} s: the server is overloaded. Retry later.", 503
            )
        if isinstance(job.result, BaseException):
            raise job.result
        return job.result

    def stats(self) -> dict:
        """``{"requests", "batches", "batch_sizes": {size: count}}`` since the start."""
        with self._stats_lock:
            sizes = dict(sorted(self.batch_sizes.items()))
        return {
            "requests": sum(k * v for k, v in sizes.items()),
            "batches": sum(sizes.values()),
            "batch_sizes": {str(k): v for k, v in sizes.items()},
        }

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` plus whatever arrives before the batch is full or the wait is over; (batch, stop seen)."""
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch_size:
            try:
                job = (
                    self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                    if self.max_wait
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch, stopping = self._collect(first)
            try:
                results = predict_batch([job.request for job in batch], self.model)
            except Exception as err:  # a bug or a broken model: answer 500, keep serving
                log.exception("batch of %d failed", len(batch))
                results = [err] * len(batch)
            with self._stats_lock:
                self.batch_sizes[len(batch)] += 1
            for job, result in zip(batch, results, strict=True):
                job.result = result
                job.done.set()


class EndpointServer(ThreadingHTTPServer):
    """The HTTP server: a :class:`Batcher` and the request size limit; ``url`` tells where it listens."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], batcher: Batcher, *, max_request_bytes: int):
        self.batcher = batcher
        self.max_request_bytes = int(max_request_bytes)
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        """Stop accepting, finish the queued requests, release the socket (call after ``shutdown``)."""
        self.batcher.stop()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: EndpointServer
    timeout = SOCKET_TIMEOUT_S
    server_version = "vc-serve"

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        log.debug("%s - %s", self.address_string(), format % args)

    def _send(self, status: int, body: str, started: float, size: int = 0, close: bool = False) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", JSON)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        log.info(
            "%s %s %d %.1f ms (%d bytes in)",
            self.command,
            self.path,
            status,
            (time.perf_counter() - started) * 1e3,
            size,
        )

    def do_GET(self):
        started = time.perf_counter()
        if self.path == "/ping":
            self._send(200, json.dumps({"status": "ok"}), started)
        elif self.path == "/stats":
            self._send(200, json.dumps(self.server.batcher.stats()), started)
        else:
            self._send(
                404, json.dumps({"error": f"no {self.path}: use GET /ping or POST /invocations."}), started
            )

    def do_POST(self):
        started = time.perf_counter()
        if self.path != "/invocations":
            self._send(
                404, json.dumps({"error": f"no {self.path}: POST to /invocations."}), started, close=True
            )
            return
        body, error = self._read_body()
        if error is not None:
            status, text = error_response(error)
            self._send(status, text, started, len(body or b""), close=True)
            return
        try:
            request = input_fn(body, self.headers.get("Content-Type", JSON))
            reply = output_fn(self.server.batcher.submit(request), self.headers.get("Accept") or JSON)
        except Exception as err:
            status, text = error_response(err)
            if status >= 500:
                log.error("request failed", exc_info=err)
            self._send(status, text, started, len(body))
            return
        self._send(200, reply, started, len(body))

    def _read_body(self) -> tuple[bytes | None, RequestError | None]:
        """The request body, or the error to answer with (bad or missing length, over the limit)."""
        limit = self.server.max_request_bytes
        try:
            length = int(self.headers.get("Content-Length", ""))
            if length < 0:
                raise ValueError
        except ValueError:
            return None, RequestError("send a Content-Length header with the body's size in bytes.", 411)
        if length > limit:
            if length <= DRAIN_FACTOR * limit:
                # read and drop it: a client still sending would otherwise see a reset, not the 413
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(1 << 20, remaining))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            return None, RequestError(
                f"request of {length / 1e6:.1f} MB is over the {limit / 1e6:.1f} MB limit: "
                "send a shorter clip or a compressed format (FLAC, OGG).",
                413,
            )
        return self.rfile.read(length), None


def make_server(
    model,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_batch_size: int = 8,
    max_wait_ms: float = 10.0,
    max_request_mb: float = 20.0,
) -> EndpointServer:
    """A bound endpoint for ``model`` with its batcher running; call ``serve_forever()`` on it.

    ``port=0`` picks a free port (read it from ``server.url``).
    """
    batcher = Batcher(model, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms).start()
    try:
        return EndpointServer(
            (host, int(port)), batcher, max_request_bytes=int(float(max_request_mb) * 1024 * 1024)
        )
    except OSError:
        batcher.stop()
        raise


def run(cfg) -> None:
    """Serve ``cfg.ckpt`` as configured in ``cfg.serve`` (host, port, max_batch_size, max_wait_ms,
    max_request_mb) until SIGINT or SIGTERM."""
    from vc.errors import ConfigError
    from vc.infer import load_converter

    s = cfg.serve
    model = load_converter(cfg)
    try:
        server = make_server(
            model,
            host=s.host,
            port=s.port,
            max_batch_size=s.max_batch_size,
            max_wait_ms=s.max_wait_ms,
            max_request_mb=s.max_request_mb,
        )
    except OSError as err:
        raise ConfigError(
            f"cannot listen on {s.host}:{s.port} ({err}). Pick another port: serve.port=8081."
        ) from None

    def stop(signum, frame):
        log.info("signal %d: finishing the requests in flight, then stopping", signum)
        # shutdown() waits for serve_forever() to return, so it must run on another thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    log.info(
        "serving %s on %s (POST /invocations, GET /ping; batches of up to %d, %g ms wait, %g MB requests)",
        cfg.ckpt,
        server.url,
        s.max_batch_size,
        s.max_wait_ms,
        s.max_request_mb,
    )
    try:
        server.serve_forever()
    finally:
        server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped; %s", json.dumps(server.batcher.stats()))
