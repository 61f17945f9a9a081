"""The inference handler: SageMaker's model_fn / input_fn / predict_fn / output_fn, and the local endpoint's.

Contract (JSON in, JSON out)::

    request   {"src_wav_b64": "<base64 audio file>",        any format, rate and channel count
               "ref_wav_b64": "<base64 audio file>",        optional: the bundle's default speaker
               "parameters": {"threshold": 0.5, "maxlenratio": 10}}   optional generation settings
    response  {"wav_b64": "<base64 16-bit WAV, mono 16 kHz>", "sample_rate": 16000, "seconds": 2.3}
    error     {"error": "<what is wrong and how to fix it>"} with HTTP 400 (406 a reply other than JSON
               asked for, 413 too large, 415 not JSON)

In a model.tar.gz this file is ``code/inference.py`` and the vc package sits beside it in
``code/vc``. The Hugging Face inference container answers every exception of these functions
with HTTP 400 and its message; the local endpoint (vc.serve) maps :class:`RequestError` to its
status and batches requests through :func:`predict_batch`.

Every field is checked before any audio reaches the model: wrong types, parameters out of range
or contradicting each other, JSON nested too deeply or holding NaN/Infinity, base64 that is not,
and audio that would decode to more than :data:`MAX_AUDIO_SECONDS` (a few kB of FLAC silence
decodes to hours) are all client errors (4xx) naming the field.

Environment: ``VC_MAX_REQUEST_MB`` (request size limit, default 5), ``VC_DEVICE``, ``VC_DTYPE``
and ``VC_QUANTIZE`` (passed to ``VoiceConverter.from_pretrained``, default auto).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf

from vc.audio import SAMPLE_RATE, b64_to_bytes, load_audio, wav_to_b64
from vc.converter import MIN_REF_SECONDS, MIN_SOURCE_SECONDS, VoiceConverter
from vc.errors import VCError

log = logging.getLogger(__name__)

JSON = "application/json"
DEFAULT_MAX_REQUEST_MB = 5.0
MB = 1024 * 1024  # the unit of every request size setting (VC_MAX_REQUEST_MB, serve.max_request_mb)
# what a request may ask of generation; maxlenratio's bound caps the work one request can cause
# (a threshold above the sum of a step's stop probabilities just runs to that length limit)
GENERATION_LIMITS = {"threshold": (0.0, 10.0), "minlenratio": (0.0, 10.0), "maxlenratio": (0.5, 20.0)}
# one clip of a request, checked from its header before it is decoded: audio compresses without
# bound (FLAC silence: 28 kB for 10 minutes), so the byte limit alone does not bound the memory
MAX_AUDIO_SECONDS = 600.0
MAX_SAMPLES = int(MAX_AUDIO_SECONDS * 48_000 * 2)  # what 10 minutes of 48 kHz stereo decode to
SAMPLE_RATES = (1000, 384_000)


class RequestError(VCError):
    """A request the endpoint cannot take; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class ConversionRequest:
    """A decoded request: ``src`` and ``ref`` as (T,) float32 mono at 16 kHz, ``generation`` overrides."""

    src: np.ndarray
    ref: np.ndarray | None = None
    generation: dict = field(default_factory=dict)


def max_request_bytes() -> int:
    """The request size limit in bytes (``VC_MAX_REQUEST_MB``, default 5 MB)."""
    return int(float(os.environ.get("VC_MAX_REQUEST_MB", DEFAULT_MAX_REQUEST_MB)) * MB)


def too_large(size: int | None, limit: int) -> RequestError:
    """The 413 for a body of ``size`` bytes (None: not known, more than ``limit``) over ``limit`` bytes."""
    what = f"request of {size / MB:.3g} MB" if size is not None else "request"
    return RequestError(
        f"{what} is over the {limit / MB:.3g} MB limit: send a shorter clip or a compressed format (FLAC, OGG).",
        413,
    )


def check_accept(accept: str | None) -> None:
    """A 406 :class:`RequestError` unless :func:`accepts_json`."""
    if not accepts_json(accept):
        raise RequestError(
            f"accept type {reprlib.repr(accept)} is not supported: the endpoint answers {JSON}.", 406
        )


def accepts_json(accept: str | None) -> bool:
    """Whether an ``Accept`` header lets the reply be JSON: absent, or a media range that covers
    application/json (``*/*``, ``application/*``) with a q-value above 0, anywhere in its list."""
    if not accept or not accept.strip():
        return True
    for item in accept.split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        q = next((p.partition("=")[2].strip() for p in params if p.partition("=")[0].strip() == "q"), "1")
        try:
            weight = float(q)
        except ValueError:
            weight = 1.0
        if media in (JSON, "application/*", "*/*") and weight > 0:
            return True
    return False


def model_fn(model_dir: str, context=None):
    """Load the bundle in ``model_dir`` (a model.tar.gz unpacked, or any bundle folder) as a VoiceConverter."""
    log.info("loading the bundle in %s", model_dir)
    return VoiceConverter.from_pretrained(
        model_dir,
        device=os.environ.get("VC_DEVICE", "auto"),
        dtype=os.environ.get("VC_DTYPE", "auto"),
        quantize=os.environ.get("VC_QUANTIZE", "auto"),
    )


def generation_params(params) -> dict:
    """A request's ``parameters`` (None or a mapping) -> generation overrides as floats.

    Raises :class:`RequestError` for a non-mapping, an unknown name or a value outside
    :data:`GENERATION_LIMITS`; the endpoint and the demo check with this one function.
    """
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise RequestError(
            f"'parameters' must be a JSON object such as {{\"maxlenratio\": 10}}, not {type(params).__name__}."
        )
    out = {}
    for key, value in params.items():
        if key not in GENERATION_LIMITS:
            raise RequestError(
                f"unknown generation parameter {reprlib.repr(key)}: use {', '.join(GENERATION_LIMITS)}."
            )
        low, high = GENERATION_LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise RequestError(
                f"parameter '{key}'={reprlib.repr(value)}: give a number from {low:g} to {high:g}."
            )
        out[key] = float(value)
    if out.get("minlenratio", 0.0) > out.get("maxlenratio", math.inf):
        raise RequestError(
            f"parameters minlenratio={out['minlenratio']:g} and maxlenratio={out['maxlenratio']:g} "
            "contradict each other: minlenratio must not exceed maxlenratio."
        )
    return out


def _check_size(data: bytes, key: str) -> None:
    """Refuse audio whose header promises more than one clip may hold, before decoding it."""
    try:
        info = sf.info(io.BytesIO(data))
    except Exception:  # not a file soundfile can read: load_audio says so with its own message
        return
    if not SAMPLE_RATES[0] <= info.samplerate <= SAMPLE_RATES[1]:
        raise RequestError(
            f"{key}: a sample rate of {info.samplerate} Hz is not audio the endpoint takes: "
            f"send {SAMPLE_RATES[0]} to {SAMPLE_RATES[1]} Hz (16 kHz is what the model uses)."
        )
    seconds = info.frames / info.samplerate
    if seconds > MAX_AUDIO_SECONDS:
        raise RequestError(
            f"{key}: {seconds / 60:.1f} minutes of audio is over the {MAX_AUDIO_SECONDS / 60:g} minute limit "
            "of one request: split the recording and send the parts.",
            413,
        )
    if info.frames * info.channels > MAX_SAMPLES:
        raise RequestError(
            f"{key}: {info.channels} channels of {seconds:.0f} s at {info.samplerate} Hz decode to more than "
            f"{MAX_AUDIO_SECONDS / 60:g} minutes of 48 kHz stereo: send mono (or fewer channels).",
            413,
        )


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_audio(
    data: bytes | str | os.PathLike, name: str, *, reference: bool = False, max_seconds: float | None = None
) -> np.ndarray:
    """A request's source (or, with ``reference``, reference) audio file, as bytes or a path ->
    (T,) float32 mono at 16 kHz.

    Raises :class:`vc.errors.AudioError` naming ``name`` for unreadable, empty, NaN, silent or
    too short audio (the converter's minimum for a source or a reference) and, with
    ``max_seconds``, too long audio; the endpoint and the demo check with this one function.
    """
    if isinstance(data, bytes):
        _check_size(data, name)
    return load_audio(
        data,
        SAMPLE_RATE,
        name=name,
        min_seconds=MIN_REF_SECONDS if reference else MIN_SOURCE_SECONDS,
        max_seconds=max_seconds,
    )


def input_fn(request_body: bytes | str, request_content_type: str = JSON) -> ConversionRequest:
    """SageMaker's hook: :func:`decode_request` with the ``VC_MAX_REQUEST_MB`` limit.

    The toolkit counts this function's parameters to decide whether to pass a context: keep two.
    """
    return decode_request(request_body, request_content_type, max_bytes=max_request_bytes())


def decode_request(
    request_body: bytes | str, request_content_type: str | None = JSON, *, max_bytes: int
) -> ConversionRequest:
    """Decode a JSON request of at most ``max_bytes`` into a :class:`ConversionRequest`.

    Raises :class:`RequestError` (415 for a content type other than JSON, 413 beyond the size
    limit or for audio too long to decode, 400 for bad JSON or fields) and
    :class:`vc.errors.AudioError` for bad base64 or audio (unreadable, empty, silent, too short):
    each message names the field.
    """
    content_type = (request_content_type or JSON).split(";")[0].strip().lower()
    if content_type != JSON:
        raise RequestError(
            f"content type {reprlib.repr(request_content_type)} is not supported: send {JSON} "
            "(curl: -H 'Content-Type: application/json').",
            415,
        )
    if len(request_body) > max_bytes:
        raise too_large(len(request_body), max_bytes)
    try:
        payload = json.loads(request_body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        reason = "nested too deeply" if isinstance(err, RecursionError) else err
        raise RequestError(
            f'the body is not valid JSON ({reason}). Send {{"src_wav_b64": ..., "ref_wav_b64": ...}}.'
        ) from None
    if not isinstance(payload, dict):
        raise RequestError('the JSON body must be an object: {"src_wav_b64": ..., "ref_wav_b64": ...}.')
    unknown = sorted(set(payload) - {"src_wav_b64", "ref_wav_b64", "parameters"})
    if unknown:
        raise RequestError(
            f"unknown field(s) {', '.join(map(reprlib.repr, unknown[:5]))}: "
            "use src_wav_b64, ref_wav_b64 and parameters."
        )
    if "src_wav_b64" not in payload:
        raise RequestError("missing 'src_wav_b64': the base64 of the audio file to convert.")
    # checked here, on the request's own thread, so a bad one never reaches a batch
    src = read_audio(b64_to_bytes(payload["src_wav_b64"], "src_wav_b64"), "src_wav_b64")
    ref = None
    if payload.get("ref_wav_b64") is not None:
        ref = read_audio(b64_to_bytes(payload["ref_wav_b64"], "ref_wav_b64"), "ref_wav_b64", reference=True)
    return ConversionRequest(src=src, ref=ref, generation=generation_params(payload.get("parameters")))


def predict_batch(requests: Sequence[ConversionRequest], model) -> list:
    """Convert several requests with as few ``convert_many`` calls as possible.

    Requests with the same generation settings go in one call. If a call fails with a user error,
    its requests are retried one by one, so one bad request fails alone. Returns, in order, a
    ``Conversion`` or the :class:`VCError` of each request.
    """
    results: list = [None] * len(requests)
    groups: dict[tuple, list[int]] = {}
    for i, req in enumerate(requests):
        groups.setdefault(tuple(sorted(req.generation.items())), []).append(i)
    for key, idx in groups.items():
        try:
            outs = _convert(model, [requests[i] for i in idx], dict(key))
        except VCError as err:
            if len(idx) == 1:
                results[idx[0]] = err
                continue
            outs = []
            for i in idx:
                try:
                    outs += _convert(model, [requests[i]], dict(key))
                except VCError as single:
                    outs.append(single)
        for i, out in zip(idx, outs, strict=True):
            results[i] = out
    return results


def _convert(model, requests: Sequence[ConversionRequest], generation: dict) -> list:
    return model.convert_many(
        [(r.src, SAMPLE_RATE) for r in requests],
        [None if r.ref is None else (r.ref, SAMPLE_RATE) for r in requests],
        **generation,
    )


def predict_fn(data: ConversionRequest, model):
    """Convert one decoded request; returns the ``Conversion`` (raises its :class:`VCError`)."""
    (result,) = predict_batch([data], model)
    if isinstance(result, Exception):
        raise result
    return result


def output_fn(prediction, accept: str = JSON) -> str:
    """A ``Conversion`` -> the JSON response text (``wav_b64``, ``sample_rate``, ``seconds``)."""
    check_accept(accept)
    wav = np.asarray(prediction.wav, dtype=np.float32)
    return json.dumps(
        {
            "wav_b64": wav_to_b64(wav, prediction.sample_rate),
            "sample_rate": int(prediction.sample_rate),
            "seconds": round(len(wav) / prediction.sample_rate, 3),
        }
    )


def request_payload(src, ref=None, parameters: Mapping | None = None) -> dict:
    """The JSON request (as a dict) for audio files ``src`` and ``ref`` (paths; sent as they are, base64)."""
    from base64 import b64encode
    from pathlib import Path

    payload = {"src_wav_b64": b64encode(Path(src).read_bytes()).decode("ascii")}
    if ref is not None:
        payload["ref_wav_b64"] = b64encode(Path(ref).read_bytes()).decode("ascii")
    if parameters:
        payload["parameters"] = dict(parameters)
    return payload


def error_response(err: BaseException) -> tuple[int, str]:
    """An exception -> ``(HTTP status, JSON body {"error": ...})``; errors not caused by the request are 500."""
    if isinstance(err, RequestError):
        status = err.status
    elif isinstance(err, VCError):
        status = 400
    else:
        status = 500
    # our own 5xx (503: overloaded, shutting down) say what to do; anything else is a bug or a fault
    message = (
        str(err)
        if isinstance(err, VCError)
        else f"internal error ({type(err).__name__}); see the server log."
    )
    return status, json.dumps({"error": message})
