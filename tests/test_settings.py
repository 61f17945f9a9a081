"""Every setting of infer (mode=convert and mode=serve) and eval is checked when the config is read.

vc.settings holds one rule per key. These tests check that the rules cover every key of the
composed configs (a new key without a rule fails here), that each rule refuses values of the
wrong type or range with one line naming the key and what it takes, through the same run(cfg)
the scripts call and before anything is read or loaded, and, for a few, through the real
command line (exit status 2, no traceback).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, REPO_ROOT, compose_config
from vc.errors import ConfigError
from vc.settings import RULES, check, check_value, show


def leaf_keys(cfg, prefix: str = "") -> set[str]:
    """Dotted keys of every leaf (lists are leaves) of a config, the defaults list left out."""
    keys = set()
    for key, value in cfg.items():
        if key == "defaults":
            continue
        if isinstance(value, dict):
            keys |= leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def composed_keys(task: str) -> set[str]:
    cfg = compose_config(task, ["ckpt=x"])
    keys = leaf_keys(OmegaConf.to_container(cfg, resolve=False))
    if task == "eval":
        # the data group belongs to the corpus and split code (shared with training); eval.yaml's own
        # data.split.test_ratio is eval's setting
        own = leaf_keys(OmegaConf.to_container(OmegaConf.load(f"{CONF_DIR}/eval.yaml")))
        keys = {k for k in keys if not k.startswith("data.") or k in own}
    return keys


@pytest.mark.parametrize("task", ["infer", "eval"])
def test_every_setting_has_a_rule(task):
    keys = composed_keys(task)
    assert "serve.max_request_mb" in keys or task == "eval"
    missing = sorted(keys - set(RULES[task]))
    assert not missing, f"settings of conf/{task}.yaml without a rule in vc.settings.RULES: {missing}"
    stale = sorted(set(RULES[task]) - keys)
    assert not stale, f"rules for settings conf/{task}.yaml does not have: {stale}"


CASES = [(task, key, bad) for task, rules in RULES.items() for key, rule in rules.items() for bad in rule.bad]


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    """The composed configs (composing once per case would take minutes), with a ckpt and src that
    do not exist: nothing may be read or loaded before the settings are checked."""
    nowhere = tmp_path_factory.mktemp("nowhere")
    common = ["ckpt=./no/such/bundle", f"paths.output_dir={nowhere}/out"]
    return nowhere, {
        "infer": compose_config("infer", [*common, f"src={nowhere}/nothing.wav"]),
        "eval": compose_config("eval", [*common, "data=synthetic", f"data.corpus.root={nowhere}/corpus"]),
    }


@pytest.mark.parametrize(("task", "key", "bad"), CASES, ids=[f"{t}:{k}={show(b)}" for t, k, b in CASES])
def test_a_wrong_value_is_refused_before_any_work(configs, task, key, bad):
    """run(cfg) refuses the value with one line naming the key and what it takes, before it reads
    src or the corpus or loads a model (none of them exists)."""
    if task == "infer":
        from vc.infer import run
    else:
        from vc.evaluate import run
    nowhere, composed = configs
    cfg = copy.deepcopy(composed[task])
    OmegaConf.update(cfg, key, bad)
    with pytest.raises(ConfigError) as err:
        run(cfg)
    message = str(err.value)
    assert message.startswith(f"{key}=") and RULES[task][key].takes in message, message
    assert "\n" not in message
    assert sorted(p.name for p in nowhere.iterdir()) == []


@pytest.mark.parametrize(("task", "needed"), [("infer", ["src=x"]), ("eval", [])])
def test_the_defaults_pass(task, needed):
    check(compose_config(task, ["ckpt=x", *needed, "paths.output_dir=out"]), task)


def test_several_bad_settings_are_listed_together():
    cfg = compose_config("infer", ["ckpt=x", "src=x", "batch_size=0", "serve.port=70000"])
    with pytest.raises(
        ConfigError, match=r"^batch_size=0: use .*; serve\.port=70000: use a whole number from 0"
    ):
        check(cfg, "infer")


def test_required_settings_and_serve_mode():
    with pytest.raises(ConfigError, match=r"ckpt is required: use a bundle folder"):
        check(compose_config("infer", ["src=x"]), "infer")
    with pytest.raises(ConfigError, match=r"src is required: use an audio file, a folder or a quoted glob"):
        check(compose_config("infer", ["ckpt=x"]), "infer")
    check(compose_config("infer", ["ckpt=x", "mode=serve"]), "infer")  # serving needs no src


def test_contradicting_length_bounds_are_refused():
    cfg = compose_config(
        "infer", ["ckpt=x", "src=x", "generation.minlenratio=10", "generation.maxlenratio=0.5"]
    )
    with pytest.raises(
        ConfigError, match=r"generation\.minlenratio=10 is above generation\.maxlenratio=0\.5"
    ):
        check(cfg, "infer")


def test_contradicting_bounds_with_the_bundles_own_are_refused(tiny_bundle):
    """minlenratio=10 set, maxlenratio from the bundle (2.0): the converter refuses the pair."""
    from vc.converter import VoiceConverter

    with pytest.raises(
        ConfigError, match=r"generation\.minlenratio=10\.0 is above generation\.maxlenratio=2\.0"
    ):
        VoiceConverter.from_pretrained(tiny_bundle, device="cpu", generation={"minlenratio": 10.0})


def test_an_unknown_interpolation_names_the_key():
    cfg = compose_config("infer", ["ckpt=x", "src=${x}.wav"])
    with pytest.raises(ConfigError, match=r"^src=\$\{x\}\.wav: Interpolation key 'x' not found"):
        check(cfg, "infer")


def test_check_value_names_what_the_caller_says():
    assert check_value("generation.threshold", 0.7) == 0.7
    with pytest.raises(ConfigError, match=r"^parameters\.threshold=-1: use a number above 0"):
        check_value("generation.threshold", -1, name="parameters.threshold")


def test_choices_take_every_option_the_code_knows():
    from vc.converter import DTYPES
    from vc.metrics import SpeakerSimilarity, Transcriber
    from vc.model.quantize import QUANTIZE

    for key, options in {
        "dtype": ["auto", *DTYPES],
        "quantize": QUANTIZE,
        "metrics.asr.backend": Transcriber.BACKENDS,
        "metrics.secs.backend": SpeakerSimilarity.BACKENDS,
    }.items():
        rule = RULES["eval"][key]
        assert all(rule.accepts(option) for option in options) and not rule.accepts("other"), key


def _cli(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / script), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("script", "setting", "message"),
    [
        ("infer.py", "generation.threshold=abc", "generation.threshold=abc: use a number above 0"),
        ("infer.py", "crossfade_ms=-5", "crossfade_ms=-5: use a number of 0 or more (milliseconds)"),
        ("infer.py", "batch_size=0", "batch_size=0: use a whole number of 1 or more"),
        ("infer.py", "max_chunk_seconds=-1", "max_chunk_seconds=-1: use a number of 1 or more"),
        ("infer.py", "serve.max_request_mb=0", "serve.max_request_mb=0: use a number above 0 (MB)"),
        ("eval.py", "metrics.num_workers=-2", "metrics.num_workers=-2: use a whole number of 0 or more"),
    ],
)
def test_cli_names_the_setting_and_exits_2(script, setting, message, tmp_path):
    mode = ["mode=serve"] if setting.startswith("serve.") else [f"src={tmp_path}/nothing.wav"]
    extra = mode if script == "infer.py" else ["data=synthetic", f"data.corpus.root={tmp_path}/nowhere"]
    done = _cli(script, "ckpt=./no/such/bundle", *extra, setting, f"hydra.run.dir={tmp_path}/run")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {message}") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
