"""The web demo: a Gradio page over the same converter and request checks as the endpoint.

    pip install -e ".[demo]"
    python infer.py mode=demo ckpt=BUNDLE            # http://127.0.0.1:7860; settings: demo.* in conf/infer.yaml

Source and reference come from an upload or the microphone (no reference: the model's default
speaker); threshold, minlenratio and maxlenratio are sliders with the endpoint's bounds
(:data:`vc.sagemaker.inference.GENERATION_LIMITS`). Out: the converted audio (16 kHz mono WAV),
the source and converted log-mel spectrograms side by side, and a line with the durations, the
real-time factor and the stop reason (or the converter's runaway warning).

The Convert button runs two events. ``check`` reads and checks the request alone, with the
endpoint's own :func:`~vc.sagemaker.inference.read_audio` and
:func:`~vc.sagemaker.inference.generation_params`, and shows a bad upload's message in the page
(``gr.Error``). Only then does ``convert`` run, through Gradio's batching: the requests of all
open pages waiting at that moment are converted together (:func:`~vc.sagemaker.inference.predict_batch`),
one batch at a time, so one model serves every tab. The check comes first because a batched
function that raises fails its whole batch; an API client that calls ``/convert`` directly
gets a bad request's message in its result line instead, and the rest of its batch converts.
(Gradio itself refuses a slider value outside its bounds before our code runs, which in
``/convert`` fails the batch: API clients should keep to the bounds, or call ``/check`` first.)

gradio is imported only when the demo runs, so ``import vc.demo`` works without the extra.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

from vc import plots
from vc.audio import wav_bytes
from vc.data.features import log_mel
from vc.errors import AudioError, ConfigError, VCError
from vc.sagemaker.inference import (
    GENERATION_LIMITS,
    ConversionRequest,
    generation_params,
    predict_batch,
    read_audio,
)

log = logging.getLogger(__name__)

GENERATION_HELP = {
    "threshold": "stop when the stop probabilities of a step sum to this",
    "minlenratio": "at least this many mel frames out per encoder frame",
    "maxlenratio": "at most this many; a chunk that reaches it ran away",
}
SLIDER_STEP = 0.05


def import_gradio():
    """The gradio module, or a :class:`ConfigError` that says how to install the demo extra."""
    try:
        import gradio
    except ImportError:
        raise ConfigError(
            'mode=demo needs Gradio, which is not installed: pip install -e ".[demo]" (or pip install "gradio>=5").'
        ) from None
    return gradio


class Demo:
    """What the page does, apart from the page: check a request, convert a batch of them.

    ``converter``: a :class:`vc.converter.VoiceConverter`. ``max_seconds``: the longest source or
    reference accepted.
    """

    def __init__(self, converter, *, max_seconds: float = 60.0):
        self.converter = converter
        self.max_seconds = float(max_seconds)

    def request(self, src, ref, threshold, minlenratio, maxlenratio) -> ConversionRequest:
        """The page's inputs (audio file paths or None, slider values) -> a checked request.

        Raises the :class:`VCError` of the first problem, worded as the endpoint words it.
        """
        if src is None:
            raise AudioError("no source audio: upload a file or record one.")
        params = generation_params(
            {"threshold": threshold, "minlenratio": minlenratio, "maxlenratio": maxlenratio}
        )
        source = read_audio(src, f"source {Path(src).name}", max_seconds=self.max_seconds)
        reference = None
        if ref is None:
            # the stored default speaker, or the converter's message when there is none (no model runs)
            self.converter.speaker_embedding(None)
        else:
            reference = read_audio(
                ref, f"reference {Path(ref).name}", reference=True, max_seconds=self.max_seconds
            )
        return ConversionRequest(src=source, ref=reference, generation=params)

    def check(self, src, ref, threshold, minlenratio, maxlenratio) -> None:
        """The ``check`` event: a bad request's message shown in the page (``gr.Error``)."""
        gr = import_gradio()
        try:
            self.request(src, ref, threshold, minlenratio, maxlenratio)
        except VCError as err:
            # the user's mistake, not the server's: no traceback in the terminal
            raise gr.Error(str(err), print_exception=False) from None

    def convert(self, srcs, refs, thresholds, minlenratios, maxlenratios) -> list[list]:
        """The batched ``convert`` event: one list per input, an entry per request ->
        ``[audios, pictures, lines]``.

        An audio is the bytes of a 16 kHz mono 16-bit WAV, a picture a PIL image of the source
        and converted log-mels; a request that fails gets None, None and ``error: <message>``.
        """
        items = list(zip(srcs, refs, thresholds, minlenratios, maxlenratios, strict=True))
        results: list = [None] * len(items)
        requests: dict[int, ConversionRequest] = {}
        for i, item in enumerate(items):
            try:
                requests[i] = self.request(*item)
            except VCError as err:
                results[i] = err
        start = time.perf_counter()
        converted = predict_batch(list(requests.values()), self.converter)
        seconds = time.perf_counter() - start
        for i, result in zip(requests, converted, strict=True):
            results[i] = result
        log.info(
            "a batch of %d request(s): %d converted in %.2f s",
            len(items),
            sum(not isinstance(r, Exception) for r in results),
            seconds,
        )
        audios, pictures, lines = [], [], []
        for i, result in enumerate(results):
            if isinstance(result, Exception):
                audios.append(None)
                pictures.append(None)
                lines.append(f"error: {result}")
                continue
            audios.append(wav_bytes(result.wav, result.sample_rate))
            pictures.append(self.picture(requests[i].src, result.wav))
            lines.append(summary(result.meta, seconds, len(items)))
        return [audios, pictures, lines]

    def picture(self, src, converted):
        """(T,) 16 kHz source and converted audio -> a PIL image of their log-mels side by side."""
        from PIL import Image

        extractor = self.converter.feature_extractor
        rate = self.converter.sample_rate
        mels = {"source": log_mel(extractor, src, rate), "converted": log_mel(extractor, converted, rate)}
        buffer = io.BytesIO()
        plots.save(plots.mel_figure(mels, hop_seconds=extractor.sample_stride / rate), buffer)
        buffer.seek(0)
        return Image.open(buffer)


def summary(meta: dict, seconds: float, batch: int) -> str:
    """The result line: durations, the batch's conversion time and real-time factor, how it stopped."""
    requests = f"{batch} request{'s' if batch > 1 else ''}"
    line = (
        f"{meta['src_seconds']:.2f} s of source -> {meta['out_seconds']:.2f} s converted in {seconds:.2f} s "
        f"(real-time factor {seconds / meta['src_seconds']:.2f}, a batch of {requests}); "
    )
    return line + (f"warning: {meta['warning']}" if meta.get("warning") else "stopped by the stop token.")


def make_app(converter, *, max_batch_size: int = 8, max_seconds: float = 60.0):
    """The page for ``converter`` (a queued ``gr.Blocks``; start it with ``.launch()``).

    ``max_batch_size``: requests converted together; ``max_seconds``: the longest source or
    reference accepted. API: ``/check`` raises a bad request's message; ``/convert`` returns
    ``(converted WAV, mel picture, result line)``.
    """
    gr = import_gradio()
    if max_batch_size < 1:
        raise ConfigError(f"demo.max_batch_size={max_batch_size}: use 1 or more.")
    if max_seconds <= 0:
        raise ConfigError(f"demo.max_seconds={max_seconds}: use a positive number of seconds.")
    demo = Demo(converter, max_seconds=max_seconds)
    reference = (
        "empty: the model's default speaker"
        if converter.default_speaker is not None
        else "required: this model has no default speaker"
    )
    sources = ["upload", "microphone"]
    # uploads are people's voices: the cache is emptied of files older than an hour, every hour
    with gr.Blocks(title="Voice conversion", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            f"## Voice conversion\nConvert speech into the voice of a reference clip with `{converter.name}`. "
            f"Clips of up to {max_seconds:g} s; a reference of 3 s or more gives a steadier voice."
        )
        with gr.Row():
            src = gr.Audio(sources=sources, type="filepath", label="Source speech", elem_id="source")
            ref = gr.Audio(
                sources=sources, type="filepath", label=f"Reference voice ({reference})", elem_id="reference"
            )
        with gr.Row():
            sliders = [
                gr.Slider(
                    low,
                    high,
                    value=min(max(converter.generation[name], low), high),
                    step=SLIDER_STEP,
                    label=name,
                    info=GENERATION_HELP[name],
                    elem_id=name,
                )
                for name, (low, high) in GENERATION_LIMITS.items()
            ]
        button = gr.Button("Convert", variant="primary", elem_id="convert")
        # the browser's own player: a plain <audio> element, which any browser (and the test) can check
        audio = gr.Audio(
            label="Converted (16 kHz)",
            interactive=False,
            elem_id="converted",
            waveform_options=gr.WaveformOptions(show_recording_waveform=False),
        )
        line = gr.Textbox(label="Result", interactive=False, elem_id="result")
        picture = gr.Image(label="Log-mel spectrograms", type="pil", interactive=False, elem_id="mels")
        inputs = [src, ref, *sliders]
        button.click(demo.check, inputs, None, api_name="check", concurrency_limit=None).success(
            demo.convert,
            inputs,
            [audio, picture, line],
            api_name="convert",
            batch=True,
            max_batch_size=int(max_batch_size),
            # one batch at a time: one model, used from one thread
            concurrency_limit=1,
        )
    return app.queue()


def run(cfg) -> None:
    """Serve the page for ``cfg.ckpt`` as configured in ``cfg.demo`` (host, port, share,
    max_batch_size, max_seconds) until Ctrl-C."""
    import_gradio()  # before the model loads: a missing extra fails at once
    from vc.infer import load_converter

    settings = cfg.demo
    # launch() checks its own URL with httpx: those request lines are noise in the log
    logging.getLogger("httpx").setLevel(logging.WARNING)
    converter = load_converter(cfg)
    app = make_app(
        converter, max_batch_size=int(settings.max_batch_size), max_seconds=float(settings.max_seconds)
    )
    log.info(
        "demo of %s on http://%s:%d (batches of up to %d requests; clips up to %g s)",
        cfg.ckpt,
        settings.host,
        settings.port,
        settings.max_batch_size,
        settings.max_seconds,
    )
    try:
        # run_history: recordings are people's voices, so the page keeps no history of them
        app.launch(
            server_name=str(settings.host),
            server_port=int(settings.port),
            share=bool(settings.share),
            run_history=False,
        )
    except OSError:
        # Gradio's own message suggests launch() arguments and environment variables: say it in our terms
        raise ConfigError(
            f"cannot listen on {settings.host}:{settings.port}: the port is taken, or the host is not an address "
            f"of this machine. Pick another port (demo.port={int(settings.port) + 1}) or host (demo.host=127.0.0.1)."
        ) from None
