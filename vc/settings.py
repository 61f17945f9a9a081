"""Every setting of infer.py (mode=convert and mode=serve) and eval.py, and the values it takes.

One rule per key (:data:`RULES`), checked when the config is read (:func:`check`, the first thing
``vc.infer.run`` and ``vc.evaluate.run`` do), so a wrong type or range is one line naming the key
and what it takes, before any file is read or model loaded:

    batch_size=0: use a whole number of 1 or more.

The ``data`` group's settings belong to the corpus and split code (shared with training), which
checks them; eval.yaml's own ``data.split.test_ratio`` is here. ``check_value`` applies one rule
to a value from elsewhere (a Python argument, a request's ``parameters``).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError, InterpolationResolutionError

from vc.errors import ConfigError

METRIC_GROUPS = ("mcd", "f0", "secs", "asr", "dnsmos")


@dataclass(frozen=True)
class Rule:
    """What one setting takes: ``accepts(value)`` decides, ``takes`` says it in the error message,
    ``null`` (if null is allowed) says what null means. ``bad`` are values it must refuse (tests)."""

    accepts: Callable[[object], bool]
    takes: str
    null: str | None = None
    bad: tuple = ()
    path: bool = False

    def describe(self) -> str:
        return self.takes + (f", or null for {self.null}" if self.null else "")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def whole(low: int, high: int | None = None, *, null: str | None = None, meaning: str = "") -> Rule:
    """A whole number from ``low`` (to ``high``)."""
    span = f"from {low} to {high}" if high is not None else f"of {low} or more"
    return Rule(
        lambda v: _is_whole(v) and v >= low and (high is None or v <= high),
        f"a whole number {span}{meaning}",
        null,
        bad=(low - 1, 1.5, "abc", True) + ((high + 1,) if high is not None else ()),
    )


def number(
    low: float, *, above: bool = False, below: float | None = None, null: str | None = None, meaning: str = ""
) -> Rule:
    """A finite number ``>= low`` (``> low`` with ``above``), and ``< below`` if given."""
    span = f"above {low:g}" if above else f"of {low:g} or more"
    if below is not None:
        span = f"from {low:g} to below {below:g}"
    return Rule(
        lambda v: _is_number(v) and (v > low if above else v >= low) and (below is None or v < below),
        f"a number {span}{meaning}",
        null,
        bad=(low - 1, "abc", float("nan"), float("inf"), False)
        + ((low,) if above else ())
        + ((below,) if below is not None else ()),
    )


def choice(*options: str) -> Rule:
    return Rule(lambda v: v in options, ", ".join(options[:-1]) + f" or {options[-1]}", bad=("nonsense", 3))


def flag() -> Rule:
    return Rule(lambda v: isinstance(v, bool), "true or false", bad=("maybe", 2))


def text(what: str) -> Rule:
    return Rule(lambda v: isinstance(v, str) and v.strip() != "", what, bad=("", 3))


def _is_path(value) -> bool:
    # Hydra reads a name such as 2024 as a number; its text is still the name
    return (isinstance(value, str) and value.strip() != "") or _is_number(value)


def path(what: str, *, null: str | None = None) -> Rule:
    """A file or folder name (or a hub id): text; quote names Hydra would read otherwise."""
    return Rule(_is_path, what, null, bad=("", True), path=True)


def paths(what: str, *, null: str | None = None) -> Rule:
    """A path, or a list of paths."""
    return Rule(
        lambda v: _is_path(v) or (isinstance(v, list) and bool(v) and all(_is_path(p) for p in v)),
        what,
        null,
        bad=("", True, [], [True]),
        path=True,
    )


def subset(*options: str) -> Rule:
    return Rule(
        lambda v: isinstance(v, list) and all(x in options for x in v),
        f"a list of any of {', '.join(options)}",
        bad=(["nonsense"], "mcd", 3),
    )


def number_range(what: str) -> Rule:
    return Rule(
        lambda v: (
            isinstance(v, list) and len(v) == 2 and all(_is_number(x) and x > 0 for x in v) and v[0] < v[1]
        ),
        what,
        bad=([800, 40], [0, 800], [40], "abc"),
    )


DEVICE = Rule(
    lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None,
    "auto, cpu, cuda, cuda:N or mps",
    bad=("gpu", "cuda:x", 0),
)
CKPT = path(
    "a bundle folder (train.py writes outputs/train/runs/<time>/bundle), a Lightning .ckpt or a hub id "
    "such as microsoft/speecht5_vc"
)

# Settings infer and eval share: the converter's, and the groups both compose.
COMMON: dict[str, Rule] = {
    "task_name": text("a name for the run folders"),
    "ckpt": CKPT,
    "vocoder": path("a HiFiGAN folder or hub id", null="the checkpoint's own"),
    "speaker_encoder": path("a SpeechBrain x-vector folder or hub id", null="the checkpoint's own"),
    "device": DEVICE,
    "dtype": choice("auto", "bf16", "fp16", "fp32"),
    "quantize": choice("auto", "none", "fp16"),
    "threads": whole(1, null="torch's default (one per core)"),
    "batch_size": whole(1),
    "max_chunk_seconds": number(1, meaning=" (seconds; 10 works well)"),
    "crossfade_ms": number(0, meaning=" (milliseconds)"),
    "generation.threshold": number(0, above=True, null="the checkpoint's own (0.5)"),
    "generation.minlenratio": number(0, null="the checkpoint's own (0.0)"),
    "generation.maxlenratio": number(0, above=True, null="the checkpoint's own (20.0)"),
    "tiny_models": path("a folder for the tiny offline checkpoints", null="no tiny models"),
    "audio.sample_rate": whole(1, meaning=" (Hz)"),
    "audio.num_mel_bins": whole(1),
    "audio.hop_length": whole(1, meaning=" (samples)"),
    "audio.win_length": whole(1, meaning=" (samples)"),
    "audio.n_fft": whole(1, meaning=" (samples)"),
    "audio.fmin": number(0, meaning=" (Hz)"),
    "audio.fmax": number(0, above=True, meaning=" (Hz)"),
    **{
        f"paths.{name}": path("a folder")
        for name in (
            "root_dir",
            "data_dir",
            "cache_dir",
            "log_dir",
            "output_dir",
            "checkpoint_dir",
            "bundle_dir",
        )
    },
}

RULES: dict[str, dict[str, Rule]] = {
    "infer": {
        **COMMON,
        "mode": choice("convert", "serve", "demo"),
        "src": path("an audio file, a folder or a quoted glob such as 'src=\"in/**/*.flac\"'"),
        "ref": paths(
            "an audio file, a folder, a glob or a list of files", null="the bundle's default speaker"
        ),
        "out": path("a .wav file (one src) or a folder", null="${paths.output_dir}/converted"),
        "overwrite": flag(),
        "out_format": choice("pcm16", "float"),
        "seed": whole(0, null="no reseeding"),
        "serve.host": text("a host name or address to listen on, such as 127.0.0.1 or 0.0.0.0"),
        "serve.port": whole(0, 65535, meaning=" (0: any free port)"),
        "serve.max_batch_size": whole(1),
        "serve.max_wait_ms": number(0, meaning=" (milliseconds)"),
        "serve.max_request_mb": number(0, above=True, meaning=" (MB)"),
        "demo.host": text("a host name or address to listen on, such as 127.0.0.1 or 0.0.0.0"),
        "demo.port": whole(0, 65535, meaning=" (0: any free port)"),
        "demo.share": flag(),
        "demo.max_batch_size": whole(1),
        "demo.max_seconds": number(0, above=True, meaning=" (seconds)"),
    },
    "eval": {
        **COMMON,
        "seed": whole(0),
        "data.split.test_ratio": number(0, below=1),
        "split": choice("test", "val", "train"),
        "max_utterances": whole(1, null="all"),
        "speaker": choice("average", "utterance", "default"),
        "metrics.run": subset(*METRIC_GROUPS),
        "metrics.f0_range": number_range("two numbers above 0, low before high (Hz), such as [40, 800]"),
        "metrics.num_workers": whole(0, meaning=" (0: in this process)"),
        "metrics.device": DEVICE,
        "metrics.secs.backend": choice("resemblyzer", "speechbrain"),
        "metrics.secs.source": path(
            "a SpeechBrain folder or hub id", null="speechbrain/spkrec-xvect-voxceleb"
        ),
        "metrics.asr.backend": choice("pocketsphinx", "whisper", "wav2vec2"),
        "metrics.asr.model": path("an ASR model folder or hub id", null="the backend's default"),
        "references.source": flag(),
        "references.target": flag(),
        "references.pretrained": flag(),
        "eval.pretrained": path(
            "a SpeechT5 hub id or folder (data=voice)", null="the bundle's record of model.pretrained"
        ),
        "eval.sources": path("a folder of other speakers' recordings (data=voice)", null="none"),
    },
}

# Keys that must be set (``???`` in the YAML), with an example; src only to convert files.
REQUIRED = {"ckpt": "ckpt=outputs/train/runs/<time>/bundle", "src": "src=speech.wav"}


def show(value) -> str:
    """A value as the user would type it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, str) and (value == "" or value != value.strip()):
        return repr(value)
    return str(value)


def check_value(key: str, value, *, task: str = "infer", name: str | None = None):
    """``value`` checked against the rule of ``key`` (in ``task``'s settings); returns it, or raises
    :class:`ConfigError` naming ``name`` (default ``key``) and what it takes."""
    problem = _problem(RULES[task][key], name or key, value)
    if problem:
        raise ConfigError(problem)
    return value


def check_generation(generation: Mapping, *, prefix: str = "generation.") -> None:
    """Each of threshold / minlenratio / maxlenratio that ``generation`` sets (names in messages
    start with ``prefix``), and minlenratio no larger than maxlenratio."""
    problems = [_problem(COMMON[f"generation.{k}"], prefix + k, v) for k, v in generation.items()]
    _raise([p for p in problems if p] or [_bounds_problem(generation, prefix)])


def check(cfg: DictConfig, task: str) -> None:
    """Check every setting of ``cfg`` (the composed ``conf/<task>.yaml``, ``task`` infer or eval).

    Raises one :class:`ConfigError` listing each bad setting with what it takes.
    """
    rules = RULES[task]
    serving = task == "infer" and cfg.get("mode") in ("serve", "demo")
    problems = []
    for key, node in _leaves(cfg):
        rule = rules.get(key)
        if rule is None:
            continue
        if node._is_missing():
            if key in REQUIRED and not (serving and key == "src"):
                problems.append(f"{key} is required: use {rule.takes}, e.g. {REQUIRED[key]}")
            continue
        try:
            value = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
            if isinstance(value, (ListConfig, DictConfig)):
                value = OmegaConf.to_container(value, resolve=True)
        except InterpolationKeyError as err:
            problems.append(
                f"{key}={node._value()}: {str(err).splitlines()[0]}: ${{...}} refers to another setting. For the "
                "characters themselves write \\${ instead"
            )
            continue
        except InterpolationResolutionError:
            continue  # e.g. ${hydra:...} outside a Hydra app: the code that uses the value reports it
        problems.append(_problem(rule, key, value))
    problems = [p for p in problems if p]
    if not problems:
        generation = {k: v for k, v in (cfg.get("generation") or {}).items() if v is not None}
        problems = [_bounds_problem(generation, "generation.")]
    _raise(problems)


def _bounds_problem(generation: Mapping, prefix: str) -> str | None:
    low, high = generation.get("minlenratio"), generation.get("maxlenratio")
    if low is None or high is None or low <= high:
        return None
    return (
        f"{prefix}minlenratio={show(low)} is above {prefix}maxlenratio={show(high)}: the output would have to be "
        "longer than its own limit. Use a minlenratio no larger than maxlenratio"
    )


def _problem(rule: Rule, key: str, value) -> str | None:
    if value is None and rule.null is not None:
        return None
    if rule.accepts(value):
        return None
    return f"{key}={show(value)}: use {rule.describe()}"


def _raise(problems: list) -> None:
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError("; ".join(problems) + ".")


def _leaves(cfg: DictConfig, prefix: str = "") -> list[tuple[str, object]]:
    """``(dotted key, node)`` of each leaf of ``cfg`` (lists count as leaves), nothing resolved."""
    leaves = []
    for k in cfg.keys():
        node = cfg._get_node(k)
        key = f"{prefix}{k}"
        if isinstance(node, DictConfig) and not (
            node._is_none() or node._is_missing() or node._is_interpolation()
        ):
            leaves.extend(_leaves(node, key + "."))
        else:
            leaves.append((key, node))
    return leaves
