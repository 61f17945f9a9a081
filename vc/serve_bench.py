"""Load test of a local endpoint: N concurrent clients send a fixed number of conversion requests.

    python -m vc.serve_bench --url http://127.0.0.1:8080 --clients 8 --requests 64 --src a.wav --ref b.wav

Prints throughput, p50/p99 latency and the batch sizes the server formed during the run (from
its ``GET /stats``). Compare a server started with ``serve.max_batch_size=8`` against one with
``serve.max_batch_size=1``. It only talks to this machine (127.0.0.1, localhost, ::1) and is
bounded: at most 64 clients, 10,000 requests and ``--max-seconds`` of wall time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np

from vc.errors import ConfigError
from vc.sagemaker.inference import request_payload

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_CLIENTS = 64
MAX_REQUESTS = 10_000


def check_url(url: str) -> str:
    """``url`` without a trailing slash if it is http on this machine; :class:`ConfigError` otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK:
        raise ConfigError(
            f"--url {url}: the load test only targets this machine (http://127.0.0.1:PORT or localhost)."
        )
    return url.rstrip("/")


def _stats(url: str, timeout: float) -> dict:
    try:
        with urllib.request.urlopen(f"{url}/stats", timeout=timeout) as reply:
            return json.loads(reply.read())
    except (urllib.error.URLError, ValueError, OSError, http.client.HTTPException):
        return {}


def _batch_sizes_between(before: dict, after: dict) -> dict[int, int]:
    old = {int(k): v for k, v in before.get("batch_sizes", {}).items()}
    new = {int(k): v for k, v in after.get("batch_sizes", {}).items()}
    return {k: new[k] - old.get(k, 0) for k in sorted(new) if new[k] - old.get(k, 0) > 0}


def bench(
    url: str,
    body: bytes,
    *,
    clients: int = 8,
    requests: int = 64,
    timeout: float = 120.0,
    max_seconds: float = 600.0,
    warmup: int = 1,
) -> dict:
    """Send ``requests`` POSTs of ``body`` to ``url``/invocations from ``clients`` threads.

    Stops early once ``max_seconds`` have passed. Returns ``{"clients", "requests", "ok", "failed",
    "seconds", "throughput" (ok requests per second), "p50_s", "p99_s", "batch_sizes", "errors"}``.
    """
    url = check_url(url)
    if not 1 <= clients <= MAX_CLIENTS or not 1 <= requests <= MAX_REQUESTS:
        raise ConfigError(
            f"--clients 1..{MAX_CLIENTS} and --requests 1..{MAX_REQUESTS}; got {clients} and {requests}."
        )
    target = f"{url}/invocations"
    headers = {"Content-Type": "application/json"}

    def post() -> tuple[int, float, str]:
        started = time.perf_counter()
        request = urllib.request.Request(target, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                reply.read()
                status, error = reply.status, ""
        except urllib.error.HTTPError as err:
            status, error = err.code, err.read().decode(errors="replace")[:200]
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            # the server went away or cut its reply short (IncompleteRead is not an OSError)
            status, error = 0, f"{type(err).__name__}: {err}"
        return status, time.perf_counter() - started, error

    for _ in range(warmup):  # the first request pays for lazy loading (speaker encoder, kernels)
        post()
    before = _stats(url, timeout)
    lock = threading.Lock()
    remaining = [requests]
    deadline = time.monotonic() + max_seconds
    results: list[tuple[int, float, str]] = []

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            outcome = post()
            with lock:
                results.append(outcome)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    seconds = time.perf_counter() - started
    ok = [lat for status, lat, _ in results if status == 200]
    errors = sorted({f"{status}: {error}" for status, _, error in results if status != 200})
    return {
        "clients": clients,
        "requests": len(results),
        "ok": len(ok),
        "failed": len(results) - len(ok),
        "seconds": seconds,
        "throughput": len(ok) / seconds if seconds > 0 else 0.0,
        "p50_s": float(np.percentile(ok, 50)) if ok else float("nan"),
        "p99_s": float(np.percentile(ok, 99)) if ok else float("nan"),
        "batch_sizes": _batch_sizes_between(before, _stats(url, timeout)),
        "errors": errors[:5],
    }


def format_result(result: dict, label: str = "") -> str:
    """One line: throughput, p50/p99 latency, batch sizes."""
    sizes = ", ".join(f"{size}x{count}" for size, count in result["batch_sizes"].items()) or "n/a"
    line = (
        f"{label + ': ' if label else ''}{result['ok']}/{result['requests']} ok with {result['clients']} clients in "
        f"{result['seconds']:.2f} s -> {result['throughput']:.2f} req/s, latency p50 {result['p50_s'] * 1e3:.0f} ms, "
        f"p99 {result['p99_s'] * 1e3:.0f} ms; batches (size x count): {sizes}"
    )
    if result["errors"]:
        line += "\n  errors: " + "; ".join(result["errors"])
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vc.serve_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the endpoint on this machine")
    parser.add_argument("--clients", type=int, default=8, help=f"concurrent clients (1..{MAX_CLIENTS})")
    parser.add_argument("--requests", type=int, default=64, help=f"requests in all (1..{MAX_REQUESTS})")
    parser.add_argument("--src", required=True, help="source audio file sent in every request")
    parser.add_argument(
        "--ref", default=None, help="reference audio file (default: the model's default speaker)"
    )
    parser.add_argument(
        "--parameters", default=None, help="generation parameters as JSON, e.g. '{\"maxlenratio\": 4}'"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop sending after this long")
    args = parser.parse_args(argv)
    try:
        parameters = json.loads(args.parameters) if args.parameters else None
        body = json.dumps(request_payload(args.src, args.ref, parameters)).encode()
        result = bench(
            args.url,
            body,
            clients=args.clients,
            requests=args.requests,
            timeout=args.timeout,
            max_seconds=args.max_seconds,
        )
    except (ConfigError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_result(result, args.url))
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
