"""The synthetic ARCTIC corpus: layout, audio format, distinct voices, same content, determinism."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from vc.audio import file_hash
from vc.data.arctic import folder_name, read_prompts
from vc.data.synthetic import DEFAULT_SPEAKERS, MARKER, SyntheticCorpus, write_synthetic_arctic


def _f0(wav: np.ndarray, sr: int) -> float:
    """Pitch (Hz) of the loudest 64 ms of ``wav`` by autocorrelation over 60-400 Hz."""
    n = int(0.064 * sr)
    energy = np.convolve(wav**2, np.ones(n), "valid")
    chunk = wav[int(energy.argmax()) :][:n]
    ac = np.correlate(chunk, chunk, "full")[n - 1 :]
    lo, hi = sr // 400, sr // 60
    return sr / (lo + int(ac[lo:hi].argmax()))


def test_layout_format_and_prompts(synthetic_arctic):
    for spk in DEFAULT_SPEAKERS:
        folder = synthetic_arctic / folder_name(spk)
        prompts = read_prompts(folder / "etc" / "txt.done.data")
        assert list(prompts)[:2] == ["arctic_a0001", "arctic_a0002"]
        assert all(
            text[0].isupper() and text.endswith(".") and len(text.split()) >= 5 for text in prompts.values()
        )
        assert sorted(p.stem for p in (folder / "wav").glob("*.wav")) == list(prompts)
        for utt in list(prompts)[:3]:
            info = sf.info(folder / "wav" / f"{utt}.wav")
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert 1.0 <= info.duration <= 3.0
            wav, _ = sf.read(folder / "wav" / f"{utt}.wav")
            assert abs(20 * np.log10(np.abs(wav).max()) + 3) < 0.5


def test_speakers_differ_in_pitch_and_share_content(synthetic_arctic):
    def read(spk, utt):
        return sf.read(synthetic_arctic / folder_name(spk) / "wav" / f"{utt}.wav")[0]

    pitches = {spk: _f0(read(spk, "arctic_a0001"), 16000) for spk in DEFAULT_SPEAKERS}
    assert 75 < pitches["sya"] < 130 and 190 < pitches["syb"] < 290
    assert len({round(p, -1) for p in pitches.values()}) == 4
    # the same sentence at each speaker's own rate: durations rise and fall together over utterances
    ids = list(read_prompts(synthetic_arctic / folder_name("sya") / "etc" / "txt.done.data"))
    durations = np.array([[len(read(spk, utt)) for utt in ids] for spk in DEFAULT_SPEAKERS])
    assert np.corrcoef(durations).min() > 0.95
    assert not np.allclose(durations[0], durations[1])


def test_deterministic_and_idempotent(synthetic_arctic, tmp_path):
    again = write_synthetic_arctic(tmp_path / "a", ("sya", "syb"), num_utterances=2)
    wav = again / folder_name("syb") / "wav" / "arctic_a0002.wav"
    assert file_hash(wav) == file_hash(synthetic_arctic / folder_name("syb") / "wav" / "arctic_a0002.wav")
    before = wav.stat().st_mtime_ns
    write_synthetic_arctic(tmp_path / "a", ("sya", "syb"), num_utterances=2)
    assert wav.stat().st_mtime_ns == before
    other = write_synthetic_arctic(tmp_path / "b", ("sya", "syb"), num_utterances=2, seed=1)
    assert file_hash(other / folder_name("syb") / "wav" / "arctic_a0002.wav") != file_hash(wav)


def test_new_parameters_rewrite_the_corpus(tmp_path):
    write_synthetic_arctic(tmp_path, ("sya", "syb"), num_utterances=3)
    write_synthetic_arctic(tmp_path, ("sya", "syc"), num_utterances=2)
    assert not (tmp_path / folder_name("syb")).exists()
    assert len(list((tmp_path / folder_name("syc") / "wav").glob("*.wav"))) == 2
    assert json.loads((tmp_path / MARKER).read_text())["speakers"] == ["sya", "syc"]


def test_synthetic_corpus_writes_its_speakers_and_pairs_them(tmp_path):
    corpus = SyntheticCorpus(tmp_path, "sye", "syb", num_utterances=3, speakers=("sya", "syb"))
    corpus.prepare()
    assert corpus.name == "synthetic sye->syb"
    assert {p.name for p in tmp_path.iterdir() if p.is_dir()} == {
        folder_name(s) for s in ("sya", "syb", "sye")
    }
    result = corpus.load()
    assert [p.utt_id for p in result.pairs] == ["arctic_a0001", "arctic_a0002", "arctic_a0003"]
    assert result.summary() == "3 pairs (sye -> syb); dropped 0 ids only in sye, 0 only in syb"
