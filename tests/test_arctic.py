"""ARCTIC folders: prompt parsing, pairing by utterance id, and the errors a user can hit."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from vc.data.arctic import SHA256, ArcticCorpus, folder_name, pair_speakers, read_prompts, speaker_dir
from vc.errors import DataError


@pytest.fixture
def corpus(synthetic_arctic, tmp_path) -> Path:
    """A private copy of the synthetic corpus, free to damage."""
    return Path(shutil.copytree(synthetic_arctic, tmp_path / "arctic"))


def _ids(root: Path, spk: str) -> list[str]:
    return list(read_prompts(root / folder_name(spk) / "etc" / "txt.done.data"))


def _drop_utterance(root: Path, spk: str, utt: str) -> None:
    """Remove one utterance from a speaker: its wav and its prompt line."""
    folder = root / folder_name(spk)
    (folder / "wav" / f"{utt}.wav").unlink()
    prompts = folder / "etc" / "txt.done.data"
    prompts.write_text("".join(line + "\n" for line in prompts.read_text().splitlines() if utt not in line))


def test_read_prompts_parses_festvox_lines(tmp_path):
    path = tmp_path / "txt.done.data"
    path.write_text(
        '( arctic_a0001 "Author of the danger trail, Philip Steels, etc." )\n'
        "\n"
        '(arctic_a0002 "He said \\"no\\" twice.")\n'
    )
    assert read_prompts(path) == {
        "arctic_a0001": "Author of the danger trail, Philip Steels, etc.",
        "arctic_a0002": 'He said "no" twice.',
    }


def test_read_prompts_names_bad_lines(tmp_path):
    path = tmp_path / "txt.done.data"
    path.write_text('( arctic_a0001 "fine" )\narctic_a0002 no parentheses\n( arctic_a0003 "fine" )\nbroken\n')
    with pytest.raises(DataError, match="line 2") as err:
        read_prompts(path)
    assert "line 4" in str(err.value) and "line 3" not in str(err.value)


def test_pairs_share_ids_sorted_with_text(corpus):
    result = ArcticCorpus(corpus, "sya", "syb", download=False).load()
    ids = _ids(corpus, "sya")
    assert [p.utt_id for p in result.pairs] == sorted(ids)
    first = result.pairs[0]
    assert first.src_path == corpus / "cmu_us_sya_arctic" / "wav" / f"{first.utt_id}.wav"
    assert first.tgt_path == corpus / "cmu_us_syb_arctic" / "wav" / f"{first.utt_id}.wav"
    assert (first.src_spk, first.tgt_spk) == ("sya", "syb") and first.text.endswith(".")
    assert result.summary() == f"{len(ids)} pairs (sya -> syb); dropped 0 ids only in sya, 0 only in syb"


def test_ids_on_one_side_only_are_dropped_and_counted(corpus):
    ids = _ids(corpus, "sya")
    _drop_utterance(corpus, "syb", ids[0])
    _drop_utterance(corpus, "syb", ids[1])
    _drop_utterance(corpus, "sya", ids[2])
    result = pair_speakers(corpus, "sya", "syb")
    assert len(result.pairs) == len(ids) - 3
    assert result.src_only == [ids[0], ids[1]] and result.tgt_only == [ids[2]]
    assert "dropped 2 ids only in sya, 1 only in syb" in result.summary()


def test_listed_wav_missing_is_an_error(corpus):
    utt = _ids(corpus, "syb")[3]
    (corpus / "cmu_us_syb_arctic" / "wav" / f"{utt}.wav").unlink()
    with pytest.raises(DataError, match=f"no wav file.*{utt}.*delete it and run again"):
        pair_speakers(corpus, "sya", "syb")


def test_missing_prompts_fall_back_to_wav_names(corpus, caplog):
    (corpus / "cmu_us_syb_arctic" / "etc" / "txt.done.data").unlink()
    with caplog.at_level(logging.WARNING, logger="vc.data.arctic"):
        result = pair_speakers(corpus, "sya", "syb")
    assert "txt.done.data not found" in caplog.text
    assert len(result.pairs) == len(_ids(corpus, "sya"))
    # the text comes from the side that still has prompts
    assert all(p.text for p in result.pairs)


def test_torchaudio_layout_is_accepted(corpus, tmp_path):
    root = tmp_path / "torchaudio_root"
    (root / "ARCTIC").mkdir(parents=True)
    for spk in ("sya", "syb"):
        shutil.move(corpus / folder_name(spk), root / "ARCTIC" / folder_name(spk))
    assert speaker_dir(root, "sya") == root / "ARCTIC" / "cmu_us_sya_arctic"
    assert len(pair_speakers(root, "sya", "syb").pairs) == len(_ids(root / "ARCTIC", "sya"))


def test_missing_folder_without_download(tmp_path):
    with pytest.raises(DataError, match=r"No folder for ARCTIC speaker 'awb'.*download=true"):
        ArcticCorpus(tmp_path, "awb", "clb", download=False).prepare()


def test_load_before_prepare_names_the_folder(tmp_path):
    with pytest.raises(DataError, match="cmu_us_awb_arctic"):
        ArcticCorpus(tmp_path, "awb", "clb").load()


def test_unknown_speaker(tmp_path):
    with pytest.raises(DataError, match=r"Unknown ARCTIC speaker 'xyz'.*awb.*data.src_spk"):
        ArcticCorpus(tmp_path, "xyz", "clb").prepare()


def test_no_shared_ids(corpus):
    wav_dir = corpus / "cmu_us_syb_arctic" / "wav"
    for wav in wav_dir.glob("*.wav"):
        wav.rename(wav_dir / wav.name.replace("arctic_a", "arctic_b"))
    prompts = corpus / "cmu_us_syb_arctic" / "etc" / "txt.done.data"
    prompts.write_text(prompts.read_text().replace("arctic_a", "arctic_b"))
    with pytest.raises(DataError, match="share no utterance id"):
        pair_speakers(corpus, "sya", "syb")


def test_prepare_with_folders_present_downloads_nothing(corpus):
    # sya/syb are not ARCTIC speakers and no mirror is reachable: prepare must not try
    ArcticCorpus(corpus, "sya", "syb", mirror="http://127.0.0.1:9/").prepare()


def test_checksum_table_covers_the_18_speakers():
    assert len(SHA256) == 18 and {"awb", "clb", "bdl", "slt"} <= SHA256.keys()
    assert all(len(digest) == 64 for digest in SHA256.values())
