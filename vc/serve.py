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
the batch sizes seen and the requests in flight.

Whatever a client sends or does, the answer is a JSON ``{"error": ...}`` with a 4xx status
(404 unknown path, 405 a method the path does not take, with ``Allow``; 408, 411, 413, 415...)
and one line in the log with the client's address; 5xx and a traceback are kept for faults of
the server. A client that hangs up is one line too. SIGINT/SIGTERM stop accepting connections,
let every request already accepted finish its reply, then exit.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from vc.errors import VCError
from vc.sagemaker.inference import (
    JSON,
    MB,
    ConversionRequest,
    RequestError,
    check_accept,
    decode_request,
    error_response,
    output_fn,
    predict_batch,
    too_large,
)

log = logging.getLogger(__name__)

# a request waiting longer than this for its batch is answered 503 (the server is overloaded or stuck)
REQUEST_TIMEOUT_S = 300.0
# seconds a client may stay silent while sending its request (or not read its reply) before its
# thread gives up
SOCKET_TIMEOUT_S = 30.0
# an oversized body up to this many times the limit is read and dropped, so the client gets the 413
DRAIN_FACTOR = 8
# the paths and the methods each takes
ROUTES = {"/ping": ("GET", "HEAD"), "/stats": ("GET", "HEAD"), "/invocations": ("POST",)}
# longest chunk-size or trailer line of a chunked body, and most trailer lines
MAX_LINE = 65536
MAX_TRAILERS = 100
# wakes the batcher from waiting for a batch to fill (see Batcher.hurry)
_WAKE = object()


class ClientGone(Exception):
    """The client hung up before its request was read or its reply written: nobody to answer."""


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
        self._queue: queue.Queue[_Job | object | None] = queue.Queue()
        self._hurry = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vc-batcher", daemon=True)

    def start(self) -> Batcher:
        self._thread.start()
        return self

    def hurry(self) -> None:
        """Stop waiting for batches to fill (the server is stopping: no more requests will come);
        from now on a batch holds what is queued, and the one being collected closes at once."""
        self._hurry.set()
        self._queue.put(_WAKE)

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
            if isinstance(job, _Job):
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
            wait = 0.0 if self._hurry.is_set() else max(deadline - time.monotonic(), 0.0)
            try:
                job = self._queue.get(timeout=wait)  # timeout 0: only what is queued already
            except queue.Empty:
                break
            if job is None:
                return batch, True
            if isinstance(job, _Job):
                batch.append(job)
        return batch, False

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            if not isinstance(first, _Job):
                continue
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
    """The HTTP server: a :class:`Batcher` and the request size limit; ``url`` tells where it listens.

    ``host`` may be an IPv4 or IPv6 address or a name (``::1`` listens on IPv6).
    """

    # non-daemon handler threads: closing the server joins them, so no reply is cut off by the exit
    daemon_threads = False
    # the listen backlog: a burst of clients waits to be accepted instead of being refused
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], batcher: Batcher, *, max_request_bytes: int):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.batcher = batcher
        self.max_request_bytes = int(max_request_bytes)
        self.in_flight = 0  # requests to /invocations received and not yet answered
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def stats(self) -> dict:
        """:meth:`Batcher.stats` and ``in_flight``."""
        return {**self.batcher.stats(), "in_flight": self.in_flight}

    @contextmanager
    def tracking(self) -> Iterator[None]:
        """Counts one request in flight while the block runs."""
        with self._lock:
            self.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    def close(self) -> None:
        """After ``shutdown``: take the connections already waiting to be accepted, stop listening,
        let every accepted request finish (its batch closes at once) and send its reply, then
        stop the batcher."""
        self.batcher.hurry()
        self._accept_waiting()
        self.socket.close()
        log.info("stopped listening; finishing %d request(s) in flight", self.in_flight)
        self.server_close()  # joins the handler threads
        self.batcher.stop()

    def _accept_waiting(self) -> None:
        # clients the kernel accepted into the backlog count as accepted: closing would reset them
        self.socket.settimeout(0.0)
        for _ in range(self.request_queue_size):
            try:
                request, client_address = self.get_request()
            except OSError:  # none waiting
                return
            self.process_request(request, client_address)

    def handle_error(self, request, client_address) -> None:
        """An exception a handler did not answer itself: a hang-up is one line, anything else a fault."""
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, TimeoutError)):
            log.warning("%s: the client hung up (%s)", _address(client_address), type(err).__name__)
        else:
            log.error("%s: the request failed", _address(client_address), exc_info=err)


def _address(client_address) -> str:
    host, port = client_address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _oneline(text: object, limit: int = 300) -> str:
    """``text`` on one line, control characters escaped, at most ``limit`` characters (for the log)."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return shown if len(shown) <= limit else shown[:limit] + "..."


class _Handler(BaseHTTPRequestHandler):
    server: EndpointServer
    timeout = SOCKET_TIMEOUT_S
    server_version = "vc-serve"
    # the stdlib's default (HTTP/0.9) answers a malformed request line with a bare body, no status
    default_request_version = "HTTP/1.0"

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        log.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_GET

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (bad request line or headers, a method without a
        ``do_`` handler) answered like every other error."""
        if code == HTTPStatus.NOT_IMPLEMENTED and self.command:  # a method this server has no handler for
            self._handle()
            return
        self.close_connection = True
        text = f"{message or HTTPStatus(code).phrase}."
        if code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:  # the client's doing: 4xx like every client error
            code, text = 400, f"{text} Use HTTP/1.1."
        self._handle(RequestError(text, code))

    def _handle(self, refused: RequestError | None = None) -> None:
        """Answer one request (``refused``: already refused while parsing it), log it as one line."""
        started = time.perf_counter()
        self._size = 0
        method, path = self.command or "-", getattr(self, "path", "") or "-"
        client = _address(self.client_address)
        err: BaseException | None = refused
        try:
            if err is None:
                try:
                    status, body = 200, self._route()
                except ClientGone:
                    raise
                except Exception as caught:
                    err = caught
            if err is not None:
                status, body = error_response(err)
            self._reply(status, body)
        except ClientGone as gone:
            log.warning("%s %s %s: %s", client, method, _oneline(path), gone)
            return
        where = f"{client} {method} {_oneline(path)} {status}"
        if status >= 500:  # a traceback for a fault, not for our own 503s
            log.error("%s: %s", where, _oneline(err), exc_info=None if isinstance(err, VCError) else err)
        elif status >= 400:
            log.warning("%s: %s", where, _oneline(err))
        else:
            ms = (time.perf_counter() - started) * 1e3
            log.info("%s %.1f ms (%d bytes in)", where, ms, self._size)

    def _route(self) -> str:
        path = urlsplit(self.path).path
        allowed = ROUTES.get(path)
        if allowed is None or self.command not in allowed or path != "/invocations":
            self._discard_body()
        if allowed is None or self.command not in allowed:
            if allowed is None:
                raise RequestError(f"no {_oneline(path, 100)}: use GET /ping or POST /invocations.", 404)
            raise RequestError(f"{self.command} is not allowed on {path}: use {' or '.join(allowed)}.", 405)
        if path == "/ping":
            return json.dumps({"status": "ok"})
        if path == "/stats":
            return json.dumps(self.server.stats())
        with self.server.tracking():
            return self._invoke()

    def _invoke(self) -> str:
        body = self._read_body()
        accept = self.headers.get("Accept")
        check_accept(accept)  # before the work, not after it
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            raise RequestError(
                f"Content-Encoding '{_oneline(encoding, 40)}' is not supported: send the JSON as it is.", 415
            )
        request = decode_request(
            body, self.headers.get("Content-Type"), max_bytes=self.server.max_request_bytes
        )
        return output_fn(self.server.batcher.submit(request), accept)

    def _reply(self, status: int, body: str) -> None:
        data = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", JSON)
            self.send_header("Content-Length", str(len(data)))
            if status == HTTPStatus.METHOD_NOT_ALLOWED:
                self.send_header("Allow", ", ".join(ROUTES[urlsplit(self.path).path]))
            self.send_header("Connection", "close")  # one request per connection
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (ConnectionError, TimeoutError) as err:
            raise ClientGone(f"the client hung up before the {status} reply ({type(err).__name__})") from None

    # ------------------------------------------------------------------ the body

    def _read_body(self) -> bytes:
        """The request body, sent with a Content-Length or chunked.

        Raises :class:`RequestError` (400 bad framing or a body cut short, 408 the client went
        silent, 411 no length, 413 over the limit) or :class:`ClientGone` (the connection was reset).
        """
        limit = self.server.max_request_bytes
        coding = self.headers.get("Transfer-Encoding")
        if coding is not None:
            if coding.strip().lower() != "chunked":
                raise RequestError(
                    f"Transfer-Encoding '{_oneline(coding, 40)}' is not supported: "
                    "send the body with a Content-Length.",
                    400,
                )
            length, pieces = None, self._chunked()
        else:
            length = self._content_length()
            if length > DRAIN_FACTOR * limit:
                raise too_large(length, limit)
            pieces = self._exactly(length)
        kept, size = [], 0
        try:
            for piece in pieces:
                size += len(piece)
                if size > DRAIN_FACTOR * limit:
                    break
                if size <= limit:
                    kept.append(piece)
        except TimeoutError:
            raise RequestError(
                f"the body stopped arriving for {SOCKET_TIMEOUT_S:g} s: send it at once.", 408
            ) from None
        except ConnectionError as err:
            raise ClientGone(f"the client hung up while sending the body ({type(err).__name__})") from None
        self._size = size
        if size > limit:
            raise too_large(length, limit)
        return b"".join(kept)

    def _discard_body(self) -> None:
        """Read and drop a body nobody will use, so the client is not reset before it reads the reply."""
        if self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"):
            try:
                self._read_body()
            except RequestError:
                pass  # the connection closes after the reply anyway

    def _content_length(self) -> int:
        values = [v.strip() for v in self.headers.get_all("Content-Length") or []]
        if not values:
            raise RequestError(
                "send a Content-Length header with the body's size in bytes (or Transfer-Encoding: chunked).",
                411,
            )
        if len(set(values)) > 1 or not re.fullmatch(r"[0-9]{1,18}", values[0]):
            if len(set(values)) == 1 and re.fullmatch(r"[0-9]+", values[0]):
                raise too_large(None, self.server.max_request_bytes)
            raise RequestError(
                f"Content-Length '{_oneline(', '.join(values), 60)}' is not a size in bytes: "
                "send one whole number, e.g. Content-Length: 1234.",
                400,
            )
        return int(values[0])

    def _exactly(self, length: int) -> Iterator[bytes]:
        remaining = length
        while remaining > 0:
            piece = self.rfile.read1(min(remaining, MB))
            if not piece:  # answered in case the client only closed its sending side
                raise RequestError(
                    f"the body ended after {length - remaining} of its {length} bytes: "
                    "send the whole body its length announces.",
                    400,
                )
            remaining -= len(piece)
            yield piece

    def _chunked(self) -> Iterator[bytes]:
        while True:
            line = self._line("chunk size")
            size = line.split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,15}", size):
                raise RequestError(f"bad chunk size {_oneline(size, 40)} in a chunked body.", 400)
            if int(size, 16) == 0:
                for _ in range(MAX_TRAILERS):
                    if not self._line("trailer").strip():
                        return
                raise RequestError(f"more than {MAX_TRAILERS} trailer lines after a chunked body.", 400)
            yield from self._exactly(int(size, 16))
            if self._line("chunk end").strip():
                raise RequestError("a chunk of a chunked body is longer than its size says.", 400)

    def _line(self, what: str) -> bytes:
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            raise RequestError(f"the chunked body ended before its {what} line: send the whole body.", 400)
        if len(line) > MAX_LINE:
            raise RequestError(f"a {what} line of a chunked body is over {MAX_LINE} bytes.", 400)
        return line


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
        return EndpointServer((host, int(port)), batcher, max_request_bytes=int(float(max_request_mb) * MB))
    except (OSError, OverflowError):
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
    except (OSError, OverflowError) as err:  # OverflowError: a port outside 0-65535
        raise ConfigError(
            f"cannot listen on {s.host}:{s.port} ({err}). Check serve.host (127.0.0.1, ::1, 0.0.0.0) "
            "or pick another port: serve.port=8081."
        ) from None

    def stop(signum, frame):
        log.info("signal %d: finishing the %d request(s) in flight, then stopping", signum, server.in_flight)
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
