"""Share a bundle on the Hugging Face Hub, and load it back by its repo id.

    python -m vc.hub push BUNDLE USER/NAME [--private] [--eval EVAL_RUN_DIR] [--dry-run [--out DIR]]
    python -m vc.hub cache FOLDER USER/NAME      # a copied bundle into the local Hub cache

``push`` uploads the bundle folder as it is plus a generated model card (``README.md``: the Hub's
metadata, what the model was trained on and how, the table of an ``eval.py`` run, how to use it,
intended use and consent). ``--dry-run`` writes the folder that would be uploaded instead.

A repo that holds ``vc.yaml`` is a bundle repo: :meth:`vc.converter.VoiceConverter.from_pretrained`
and ``infer.py ckpt=USER/NAME`` download it whole (:func:`bundle_repo`), vocoder and speaker
encoder included; with ``HF_HUB_OFFLINE=1`` they load it from the local Hub cache. ``cache`` puts
a folder into that cache the way a download leaves it (:func:`add_to_cache`), for machines that
never reach the Hub: copy the pushed folder over, and ``ckpt=USER/NAME`` works there too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, ModelCardData
from omegaconf import OmegaConf

from vc.errors import ConfigError, MissingModelError
from vc.model.bundle import BUNDLE_FILE, is_bundle

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
# the parts a bundle cannot convert without (vc.model.bundle)
BUNDLE_PARTS = ("speecht5/config.json", "vocoder/config.json", "speaker_encoder/hyperparams.yaml")
TAGS = ["speecht5", "voice-conversion", "speech", "audio", "speecht5-vc"]
# corpus class -> (how the card names it, its dataset ids on the Hub)
CORPORA = {
    "vc.data.arctic.ArcticCorpus": ("CMU ARCTIC", ["cmu-arctic"]),
    "vc.data.manifest.ManifestCorpus": ("parallel recordings listed in a CSV manifest", []),
    "vc.data.synthetic.SyntheticCorpus": (
        "the offline synthetic corpus of vc.data.synthetic (not speech)",
        [],
    ),
}
CONSENT = (
    "Voice conversion can put words in someone's mouth. Convert into a voice only with the consent of "
    "its speaker, disclose synthetic speech as such, and do not use it to deceive or impersonate."
)
SPEECHT5_BIBTEX = """@inproceedings{ao-etal-2022-speecht5,
  title     = {{S}peech{T}5: Unified-Modal Encoder-Decoder Pre-Training for Spoken Language Processing},
  author    = {Ao, Junyi and Wang, Rui and Zhou, Long and Wang, Chengyi and Ren, Shuo and Wu, Yu and Liu, Shujie and Ko, Tom and Li, Qing and Zhang, Yu and Wei, Zhihua and Qian, Yao and Li, Jinyu and Wei, Furu},
  booktitle = {Proceedings of the 60th Annual Meeting of the Association for Computational Linguistics},
  year      = {2022},
  pages     = {5723--5738},
}"""


# ---------------------------------------------------------------------------------------------
# Checks


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a Hub model id of the form ``USER/NAME``, else a :class:`ConfigError`."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
        valid = repo_id.count("/") == 1
    except HFValidationError:
        valid = False
    if not valid:
        raise ConfigError(
            f"{repo_id!r} is not a Hub repo id: use USER/NAME (letters, digits, '-', '_' and '.', no '--' or "
            "'..'), e.g. alice/speecht5-vc-awb-clb."
        )
    return repo_id


def _is_repo_id(name: str) -> bool:
    try:
        check_repo_id(name)
        return True
    except ConfigError:
        return False


def check_bundle(bundle: str | os.PathLike) -> Path:
    """The bundle folder, or a :class:`ConfigError` naming what is wrong with it."""
    path = Path(bundle).expanduser()
    if not is_bundle(path):
        raise ConfigError(
            f"{bundle}: not a bundle folder (no {BUNDLE_FILE}). Give the bundle/ folder of a training run "
            "(outputs/train/runs/<time>/bundle), or export one with `python -m vc.model.bundle CKPT OUT`."
        )
    missing = [part for part in BUNDLE_PARTS if not (path / part).is_file()]
    if missing:
        raise ConfigError(
            f"{bundle}: the bundle is incomplete (no {', '.join(missing)}). Export it again with "
            "`python -m vc.model.bundle CKPT OUT`."
        )
    return path


def load_eval_summary(eval_dir: str | os.PathLike) -> dict:
    """The ``summary.json`` of an ``eval.py`` run folder, or a :class:`ConfigError`."""
    path = Path(eval_dir).expanduser() / "summary.json"
    if not path.is_file():
        raise ConfigError(
            f"--eval {eval_dir}: not an eval.py run folder (no summary.json). Give the folder an eval run "
            "wrote (outputs/eval/runs/<time>), or leave --eval out."
        )
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"--eval {eval_dir}: summary.json is not readable JSON ({err}).") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("results"), dict):
        raise ConfigError(f"--eval {eval_dir}: summary.json has no results: it was not written by eval.py.")
    return summary


# ---------------------------------------------------------------------------------------------
# The model card


def _get(tree: dict | None, dotted: str, default=None):
    """``tree["a"]["b"]`` for ``"a.b"``; ``default`` where a level is missing (configs differ by version)."""
    for key in dotted.split("."):
        if not isinstance(tree, dict) or tree.get(key) is None:
            return default
        tree = tree[key]
    return tree


def _code(value) -> str:
    return f"`{value}`"


def _training_section(settings: dict) -> str:
    config = settings.get("train_config")
    src, tgt = settings.get("src_spk"), settings.get("tgt_spk")
    lines = ["## Training", ""]
    if not config:
        lines.append(
            "The bundle records no training configuration (it was exported from a checkpoint with "
            "`python -m vc.model.bundle`)." + (f" Speakers: {src} -> {tgt}." if src or tgt else "")
        )
        return "\n".join(lines)
    corpus = _get(config, "data.corpus._target_", "")
    corpus_name = CORPORA.get(corpus, (corpus or "unknown", []))[0]
    if corpus == "vc.data.manifest.ManifestCorpus" and _get(config, "data.corpus.path"):
        corpus_name += f" ({Path(str(_get(config, 'data.corpus.path'))).name})"
    split = _get(config, "data.split", {})
    split_text = ", ".join(f"{k} {v}" for k, v in split.items() if v is not None) or "as configured"
    steps = _get(config, "trainer.max_steps", -1)
    epochs = _get(config, "trainer.max_epochs", -1)
    budget = [
        f"{steps} steps" if steps and steps > 0 else "",
        f"{epochs} epochs" if epochs and epochs > 0 else "",
    ]
    optimizer = _get(config, "model.optimizer", {})
    rows = [
        (
            "Speakers (source -> target)",
            f"{src or _get(config, 'data.src_spk', '?')} -> {tgt or _get(config, 'data.tgt_spk', '?')}",
        ),
        ("Corpus", corpus_name),
        ("Split", split_text),
        ("Target voice conditioning", f"{_get(config, 'data.speaker.mode', '?')} x-vector"),
        ("Training budget", " or ".join(b for b in budget if b) or "until stopped"),
        ("Precision", _code(_get(config, "trainer.precision", "?"))),
        ("Devices", f"{_get(config, 'trainer.devices', '?')} x {_get(config, 'trainer.accelerator', '?')}"),
        (
            "Batch size",
            f"{_get(config, 'data.batch_size', '?')} (gradient accumulation {_get(config, 'trainer.accumulate_grad_batches', 1)})",
        ),
        (
            "Optimiser",
            f"{str(optimizer.get('_target_', '?')).rsplit('.', 1)[-1]}, lr {optimizer.get('lr', '?')}, "
            f"betas {optimizer.get('betas', '?')}, weight decay {optimizer.get('weight_decay', '?')}",
        ),
        ("Warm-up steps", _get(config, "model.scheduler.num_warmup_steps", "?")),
        ("SpecAugment", _get(config, "model.spec_augment", "?")),
        ("Exported checkpoint", _get(config, "export", "?")),
        ("Seed", _get(config, "seed", "?")),
    ]
    lines += [
        f"Fine-tuned from {_code(settings.get('pretrained'))} by speecht5-vc's `train.py` with teacher "
        "forcing: L1 before and after the post-net, BCE on the stop token and guided attention. The bundle's "
        "`vc.yaml` records the whole training configuration; the essentials:",
        "",
        "| Setting | Value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    return "\n".join(lines)


def _evaluation_section(summary: dict) -> str:
    from vc.evaluate import COLUMNS, markdown_table, table_notes

    results = summary["results"]
    present = {column for systems in results.values() for metrics in systems.values() for column in metrics}
    columns = [c for c in COLUMNS if c in present]
    data = summary.get("data", {})
    split, scored = data.get("split", "test"), data.get("scored", "?")
    conversion = summary.get("conversion") or {}
    lines = [
        "## Evaluation",
        "",
        f"`python eval.py` on {data.get('corpus', 'a parallel corpus')}: the {split} split "
        f"({scored} utterance(s); {data.get('pairing', '')}), target voice from the {summary.get('speaker', '?')} "
        f"x-vector, generation {json.dumps(summary.get('generation', {}))}"
        + (f", real-time factor {conversion['rtf']:.3f}" if conversion.get("rtf") is not None else "")
        + ".",
        "",
        markdown_table(results, columns, table_notes(split, scored, summary.get("settings", {}))).rstrip(),
    ]
    overlap = data.get("train_overlap") or {}
    if overlap.get("train"):
        lines += [
            "",
            f"**Caution:** {overlap['train']} of the {overlap.get('scored', scored)} scored utterances were "
            "training pairs of this model: the scores are optimistic.",
        ]
    lines += [
        "",
        "<details><summary>Metric settings and package versions (from the run's summary.json)</summary>",
        "",
        "```json",
        json.dumps(
            {"settings": summary.get("settings", {}), "split_settings": data.get("split_settings")},
            indent=1,
            ensure_ascii=False,
        ),
        "```",
        "",
        "</details>",
    ]
    return "\n".join(lines)


def _usage_section(repo_id: str, default_speaker: str | None) -> str:
    default = (
        f" Without `ref=` it converts into {default_speaker}, the training target." if default_speaker else ""
    )
    return f"""## How to use

With the speecht5-vc code that trained it installed
(`pip install -e .` in its checkout), the repo id is all it needs: the bundle brings its SpeechT5
model, HiFiGAN vocoder and x-vector speaker encoder.{default}

```bash
python infer.py ckpt={repo_id} src=speech.wav ref=target_voice.wav out=converted.wav
python infer.py mode=demo ckpt={repo_id}      # the web demo
```

```python
from vc.converter import VoiceConverter

converter = VoiceConverter.from_pretrained("{repo_id}")
out = converter.convert("speech.wav", ref="target_voice.wav")   # out.wav: float32, 16 kHz mono
```

Once downloaded (`hf download {repo_id}`), it also loads with `HF_HUB_OFFLINE=1`. Input: any audio
file (resampled to 16 kHz mono); long recordings are split at pauses. Output: 16 kHz mono WAV."""


def model_card(bundle: str | os.PathLike, repo_id: str, summary: dict | None = None) -> ModelCard:
    """The model card (``README.md``) of ``bundle`` pushed as ``repo_id``; ``summary``: an eval run's
    ``summary.json`` (:func:`load_eval_summary`) for the evaluation table."""
    path = check_bundle(bundle)
    settings = OmegaConf.to_container(OmegaConf.load(path / BUNDLE_FILE), resolve=True)
    config = settings.get("train_config") or {}
    corpus = _get(config, "data.corpus._target_", "")
    pretrained = str(settings.get("pretrained") or "")
    smoke = bool(config.get("tiny_models"))
    metadata = ModelCardData(
        license="mit",
        language="en",
        # only a Hub id: a local folder's origin is unknown (the body names it)
        base_model=pretrained if _is_repo_id(pretrained) else None,
        pipeline_tag="audio-to-audio",
        tags=TAGS + (["smoke-test"] if smoke else []),
        datasets=CORPORA.get(corpus, ("", []))[1] or None,
    )
    tgt = settings.get("tgt_spk")
    default_speaker = tgt if (path / "default_speaker.npy").is_file() and tgt else None
    name = repo_id.split("/")[-1]
    intro = (
        f"# {name}\n\nAny-to-any voice conversion with SpeechT5: speech in any voice goes in, the same words "
        "come out in the voice of a short reference clip of the target speaker (its SpeechBrain x-vector). "
        "A bundle of speecht5-vc: the fine-tuned "
        f"`SpeechT5ForSpeechToSpeech` (`speecht5/`), its HiFiGAN vocoder (`vocoder/`, from {_code(settings.get('vocoder'))}), "
        f"the x-vector speaker encoder (`speaker_encoder/`, from {_code(settings.get('speaker_encoder'))}), "
        "and `vc.yaml` with the audio and generation settings and the training configuration."
    )
    if smoke:
        intro += (
            "\n\n**This is a smoke-test model**: a tiny, randomly initialised SpeechT5 trained for a few steps "
            "to check that the pipeline works. Its output is not speech."
        )
    sections = [
        intro,
        _training_section(settings),
        _evaluation_section(summary) if summary else "",
        _usage_section(repo_id, default_speaker),
        "## Intended use and limitations\n\n"
        "Research on voice conversion, and converting speech into a voice whose speaker agreed to it. "
        "SpeechT5 was pre-trained on English read speech (LibriSpeech); expect the best results on clean "
        "English speech close to the training data, and weaker ones on noisy, expressive or other-language "
        f"input. Generation settings (threshold, minlenratio, maxlenratio): {json.dumps(settings.get('generation'))}. "
        "The bundled parts keep their own licences.",
        f"## Consent\n\n{CONSENT} Publish a model of a voice only with the consent of its speaker, or under a "
        "corpus licence that allows it.",
        f"## Citation\n\n```bibtex\n{SPEECHT5_BIBTEX}\n```",
    ]
    body = "\n\n".join(s for s in sections if s)
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n{body}\n")


# ---------------------------------------------------------------------------------------------
# Push


def _link_or_copy(src: str, dst: str) -> str:
    """Hard link (a bundle is hundreds of MB), or copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def stage(bundle: Path, repo_id: str, summary: dict | None, out: Path) -> Path:
    """Write the folder to upload into ``out``: the bundle's files and the model card.

    ``out`` must not exist, or hold a folder staged before (which is replaced).
    """
    card = model_card(bundle, repo_id, summary)
    if out.exists() and not (is_bundle(out) and (out / CARD_FILE).is_file()):
        raise ConfigError(
            f"--out {out}: the folder exists and is not a staged bundle; choose a new folder (it is replaced "
            "only when it holds an earlier dry run)."
        )
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    # a download's .cache and an earlier card are not part of the bundle
    shutil.copytree(
        bundle, tmp, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(".cache", ".git*", CARD_FILE)
    )
    card.save(tmp / CARD_FILE)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _hub_failure(err: BaseException) -> bool:
    """An error of the Hub's HTTP layer (refused, unreachable, unauthorised...), not a bug."""
    from huggingface_hub.errors import HfHubHTTPError

    root = type(err).__module__.split(".")[0]
    return isinstance(err, (HfHubHTTPError, OSError)) or root in {"httpx", "httpx2", "requests", "urllib3"}


def push(
    bundle: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    eval_dir: str | os.PathLike | None = None,
    dry_run: bool = False,
    out: str | os.PathLike | None = None,
) -> str:
    """Create ``repo_id`` on the Hub and upload ``bundle`` with its model card; returns the repo's URL.

    ``eval_dir``: an ``eval.py`` run folder whose table goes into the card. ``dry_run``: write the
    folder that would be uploaded into ``out`` (default ``outputs/hub/USER--NAME``) and return its
    path; nothing is uploaded and no token is needed.
    """
    from huggingface_hub import constants, get_token

    path = check_bundle(bundle)
    check_repo_id(repo_id)
    summary = load_eval_summary(eval_dir) if eval_dir is not None else None
    if summary and Path(str(summary.get("ckpt", ""))).resolve() != path.resolve():
        log.warning(
            "--eval %s scored %s, not the bundle %s being pushed", eval_dir, summary.get("ckpt"), bundle
        )
    if dry_run:
        target = Path(out) if out is not None else Path("outputs") / "hub" / repo_id.replace("/", "--")
        return str(stage(path, repo_id, summary, target.expanduser()).resolve())
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(
            "HF_HUB_OFFLINE is set: the Hub cannot be reached. Unset it to push, or add --dry-run to write the "
            "folder that would be uploaded."
        )
    if get_token() is None:
        raise ConfigError(
            "no Hugging Face token: log in with `hf auth login` or set HF_TOKEN (a token with write access), or "
            "add --dry-run to write the folder that would be uploaded."
        )
    api = HfApi()
    with tempfile.TemporaryDirectory(prefix="vc-hub-") as tmp:
        folder = stage(path, repo_id, summary, Path(tmp) / "upload")
        try:
            url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            api.upload_folder(
                repo_id=repo_id,
                repo_type="model",
                folder_path=folder,
                commit_message=f"Upload speecht5-vc bundle {path.name}",
            )
        except Exception as err:
            if not _hub_failure(err):
                raise
            raise ConfigError(
                f"could not push to {repo_id} ({type(err).__name__}: {err}). Check the network and that your "
                "token may write to that namespace (`hf auth whoami`); --dry-run writes the folder without "
                "uploading."
            ) from None
    return str(url)


# ---------------------------------------------------------------------------------------------
# Pull


def bundle_repo(name: str) -> Path | None:
    """The local snapshot of the Hub repo ``name`` if it is a bundle repo (it holds ``vc.yaml``),
    downloaded whole (offline: from the local Hub cache); None for anything else: a plain model
    repo, or a name that is no repo id (a folder).

    Offline or unreachable with nothing of ``name`` in the cache, a :class:`MissingModelError`
    names the repo and the fix.
    """
    from huggingface_hub import hf_hub_download, snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    from vc.model.pretrained import is_missing_model_error, looks_like_path

    if looks_like_path(name) or Path(name).expanduser().exists() or not _is_repo_id(name):
        return None
    try:
        hf_hub_download(name, BUNDLE_FILE)
    except LocalEntryNotFoundError as err:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return None  # a plain SpeechT5 repo in the cache: it loads as before
        raise _not_cached(name, err) from None
    except EntryNotFoundError:
        return None  # the repo has no vc.yaml: a plain model
    except Exception as err:
        if is_missing_model_error(err):
            return None  # no such repo, gated...: the SpeechT5 loader reports it as it always did
        raise
    try:
        return Path(snapshot_download(name))
    except Exception as err:
        if is_missing_model_error(err):
            raise _not_cached(name, err) from None
        raise


def _not_cached(name: str, err: BaseException) -> MissingModelError:
    from huggingface_hub import constants

    local = name.split("/")[-1]
    return MissingModelError(
        "model",
        name,
        "ckpt",
        err,
        fix=(
            f"It is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and the Hub cannot be reached "
            f"(HF_HUB_OFFLINE={'1' if constants.HF_HUB_OFFLINE else 'unset'}). Download it once where the Hub is "
            f"reachable (`hf download {name}`), then ckpt={name} loads offline too; or download it to a folder "
            f"(`hf download {name} --local-dir /path/to/{local}`) and use `ckpt=/path/to/{local}`."
        ),
    )


def _blob_id(data: bytes) -> str:
    """How the Hub names a file's blob in the cache: the sha256 of a binary (LFS) file, the git blob
    id of a text file."""
    binary = b"\0" in data[:8192]
    if not binary:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            binary = True
    if binary:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_to_cache(folder: str | os.PathLike, repo_id: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Put ``folder``'s files into the local Hub cache (``cache_dir``, default ``HF_HUB_CACHE``) as
    revision ``main`` of the model repo ``repo_id``, laid out as a download leaves it
    (``models--USER--NAME/blobs``, ``snapshots/<commit>/`` of links to the blobs, ``refs/main``);
    returns the snapshot folder. The commit is a hash of the contents, not a Hub commit.
    """
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    check_repo_id(repo_id)
    src = Path(folder).expanduser()
    if not src.is_dir():
        raise ConfigError(f"{folder}: no such folder. Give the folder to put into the Hub cache.")
    files = sorted(
        p.relative_to(src)
        for p in src.rglob("*")
        if p.is_file() and not {".cache", ".git"} & set(p.relative_to(src).parts)
    )
    if not files:
        raise ConfigError(f"{folder}: the folder holds no files.")
    repo = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    blobs = {}
    for rel in files:
        data = (src / rel).read_bytes()
        blob = repo / "blobs" / _blob_id(data)
        if not blob.exists():
            tmp = blob.with_name(blob.name + ".incomplete")
            tmp.write_bytes(data)
            os.replace(tmp, blob)
        blobs[rel] = blob
    listing = "".join(f"{rel.as_posix()} {blob.name}\n" for rel, blob in blobs.items())
    commit = hashlib.sha1(listing.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    shutil.rmtree(snapshot, ignore_errors=True)
    for rel, blob in blobs.items():
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:  # no symlinks (Windows without developer mode): huggingface_hub copies too
            shutil.copy2(blob, link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vc.hub", description="Share bundles on the Hugging Face Hub."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("push", help="upload a bundle with a generated model card")
    p.add_argument("bundle", help="the bundle folder (outputs/train/runs/<time>/bundle)")
    p.add_argument("repo_id", metavar="USER/NAME", help="the Hub model repo to create or update")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument(
        "--eval", dest="eval_dir", default=None, help="an eval.py run folder: its table goes into the card"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="write the folder that would be uploaded; upload nothing"
    )
    p.add_argument("--out", default=None, help="with --dry-run: where (default outputs/hub/USER--NAME)")
    c = commands.add_parser(
        "cache", help="put a folder into the local Hub cache as USER/NAME (offline machines)"
    )
    c.add_argument("folder", help="a pushed repo's files (e.g. a --dry-run folder)")
    c.add_argument("repo_id", metavar="USER/NAME")
    c.add_argument("--cache-dir", default=None, help="the Hub cache (default: HF_HUB_CACHE)")
    args = parser.parse_args(argv)
    from vc.cli import run_command

    if args.command == "cache":
        return run_command(
            lambda: add_to_cache(args.folder, args.repo_id, args.cache_dir),
            f"{args.repo_id} is in the Hub cache at {{}}; ckpt={args.repo_id} now loads offline",
        )
    if args.out is not None and not args.dry_run:
        parser.error("--out goes with --dry-run")
    return run_command(
        lambda: push(
            args.bundle,
            args.repo_id,
            private=args.private,
            eval_dir=args.eval_dir,
            dry_run=args.dry_run,
            out=args.out,
        ),
        "dry run: the folder to upload is {}" if args.dry_run else "pushed: {}",
    )


if __name__ == "__main__":
    sys.exit(main())
