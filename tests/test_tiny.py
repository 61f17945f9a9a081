"""The tiny checkpoints load through the real loaders and keep the real models' interfaces."""

from __future__ import annotations

import os
import threading

import numpy as np
import torch

from vc.model.tiny import _build_atomic, build_tiny_models


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.3 * np.sin(2 * np.pi * 140 * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def test_speecht5_forward_and_generate(tiny_models):
    from transformers import SpeechT5FeatureExtractor, SpeechT5ForSpeechToSpeech

    model = SpeechT5ForSpeechToSpeech.from_pretrained(tiny_models.speecht5).eval()
    extractor = SpeechT5FeatureExtractor.from_pretrained(tiny_models.speecht5)
    assert (model.config.num_mel_bins, model.config.reduction_factor, model.config.speaker_embedding_dim) == (
        80,
        2,
        512,
    )
    inputs = extractor(audio=_speech(1.0), sampling_rate=16_000, return_tensors="pt")
    labels = extractor(audio_target=_speech(1.0, 1), sampling_rate=16_000, return_tensors="pt")[
        "input_values"
    ]
    spk = torch.nn.functional.normalize(torch.randn(1, 512), dim=-1)
    with torch.no_grad():
        out = model(input_values=inputs["input_values"], speaker_embeddings=spk, labels=labels)
        speech = model.generate_speech(inputs["input_values"], spk, maxlenratio=2.0)
    assert out.spectrogram.shape[-1] == 80
    assert speech.ndim == 2 and speech.shape[1] == 80 and speech.shape[0] % 2 == 0 and speech.shape[0] > 0


def test_hifigan_upsamples_256x(tiny_models):
    from transformers import SpeechT5HifiGan

    vocoder = SpeechT5HifiGan.from_pretrained(tiny_models.vocoder).eval()
    assert vocoder.config.normalize_before and float(vocoder.scale.mean()) != 1.0  # stats were saved
    with torch.no_grad():
        wav = vocoder(torch.randn(37, 80) - 3.0)
    assert wav.shape == (37 * 256,)


def test_xvector_folder_loads_with_from_hparams(tiny_models, tmp_path):
    from speechbrain.inference.speaker import EncoderClassifier

    encoder = EncoderClassifier.from_hparams(source=str(tiny_models.xvector), savedir=str(tmp_path / "sb"))
    with torch.no_grad():
        emb = encoder.encode_batch(torch.from_numpy(np.stack([_speech(1.0), _speech(1.0, 2)])))
    assert emb.shape == (2, 1, 512) and torch.isfinite(emb).all()
    assert set(os.listdir(tiny_models.xvector)) >= {
        "hyperparams.yaml",
        "embedding_model.ckpt",
        "mean_var_norm_emb.ckpt",
        "classifier.ckpt",
        "label_encoder.txt",
    }


def test_build_is_idempotent_and_safe_to_race(tmp_path, tiny_models):
    # reusing complete folders writes nothing
    stamp = {p: os.stat(p / "config.json").st_mtime_ns for p in tiny_models[:2]}
    again = build_tiny_models(tiny_models.speecht5.parent)
    assert again == tiny_models
    assert stamp == {p: os.stat(p / "config.json").st_mtime_ns for p in again[:2]}


def test_concurrent_builds_leave_one_complete_folder(tmp_path):
    # two builders at once (DDP ranks): both finish, one folder wins whole, no temp folders stay
    barrier = threading.Barrier(2)
    errors = []

    def build(tag):
        def write(folder):
            barrier.wait(timeout=10)  # both are mid-build before either renames
            (folder / "weights").write_text(tag)

        try:
            _build_atomic(tmp_path / "part", write)
        except Exception as err:  # collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=build, args=(tag,)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert os.listdir(tmp_path) == ["part"]
    assert (tmp_path / "part" / "weights").read_text() in "ab"
