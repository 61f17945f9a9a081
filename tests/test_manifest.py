"""CSV manifests: columns, relative paths, default ids, and one error listing every bad row."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from vc.data.manifest import ManifestCorpus, read_manifest
from vc.errors import DataError


@pytest.fixture
def data(tmp_path) -> Path:
    """A folder with a few files that hold their own names: distinct bytes of one size. The manifest
    checks that they exist and compares their bytes; it never decodes them."""
    for name in ("a/one.wav", "a/two.wav", "b/one.wav", "b/two.wav", "ref.wav", "c/one.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    return tmp_path


def _write(folder: Path, text: str) -> Path:
    path = folder / "pairs.csv"
    path.write_text(text)
    return path


def test_relative_paths_resolve_against_the_csv(data, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    path = _write(data, "src_path,tgt_path\na/one.wav,b/one.wav\na/two.wav,b/two.wav\n")
    result = read_manifest(path)
    assert [p.utt_id for p in result.pairs] == ["one", "two"]
    assert result.pairs[0].src_path == data / "a/one.wav" and result.pairs[0].tgt_path == data / "b/one.wav"
    assert result.pairs[0].ref_path is None and result.pairs[0].text == ""
    assert result.src_only == [] and result.tgt_only == []


def test_optional_columns_and_absolute_paths(data):
    path = _write(
        data,
        "utt_id, src_path, tgt_path, ref_path, tgt_spk, text, notes\n"
        f'u1,{data / "a/one.wav"},b/one.wav,ref.wav,bob,"Hello, world.",ignored\n',
    )
    (pair,) = read_manifest(path).pairs
    assert pair.utt_id == "u1" and pair.src_path == data / "a/one.wav"
    assert pair.ref_path == data / "ref.wav" and pair.tgt_spk == "bob" and pair.text == "Hello, world."


def test_repeated_stems_get_unique_ids(data):
    path = _write(data, "src_path,tgt_path\na/one.wav,b/one.wav\nc/one.wav,b/one.wav\na/two.wav,b/two.wav\n")
    assert [p.utt_id for p in read_manifest(path).pairs] == ["one-L2", "one-L3", "two"]


def test_repeated_pairs_are_left_out_by_content_with_their_lines(data, caplog):
    """The same source and target audio listed again (by an absolute path, through a symlink, as a
    byte copy under another name) is one pair: the first row is kept, the repeats are named by
    line. Files that share only their size, or also their first 64 KiB, are different pairs."""
    (data / "copies").mkdir()
    shutil.copy(data / "a/one.wav", data / "copies/take 1.wav")
    (data / "link.wav").symlink_to(data / "b/one.wav")
    (data / "a/same_size.wav").write_text("a/one.wxv")
    head = os.urandom(1 << 16)
    (data / "a/long1.wav").write_bytes(head + b"1")
    (data / "a/long2.wav").write_bytes(head + b"2")
    path = _write(
        data,
        "src_path,tgt_path\n"
        "a/one.wav,b/one.wav\n"  # line 2: kept
        f"{data / 'a/one.wav'},b/./one.wav\n"  # line 3: the same files by other paths
        "copies/take 1.wav,link.wav\n"  # line 4: a copy and a symlink
        "a/one.wav,b/two.wav\n"  # line 5: kept, another target
        "a/same_size.wav,b/one.wav\n"  # line 6: kept, same size but other bytes
        "a/long1.wav,b/one.wav\n"  # line 7: kept
        "a/long2.wav,b/one.wav\n"  # line 8: kept, same first 64 KiB but other bytes
        "a/one.wav,b/one.wav\n",  # line 9: the same row again
    )
    with caplog.at_level(logging.WARNING, logger="vc.data.manifest"):
        pairs = read_manifest(path).pairs
    assert [(p.src_path.name, p.tgt_path.name) for p in pairs] == [
        ("one.wav", "one.wav"),
        ("one.wav", "two.wav"),
        ("same_size.wav", "one.wav"),
        ("long1.wav", "one.wav"),
        ("long2.wav", "one.wav"),
    ]
    assert [p.utt_id for p in pairs][:2] == ["one-L2", "one-L5"]
    assert "left out 3 duplicate row(s)" in caplog.text
    assert "line 3 repeats line 2; line 4 repeats line 2; line 9 repeats line 2" in caplog.text


def test_every_bad_row_is_reported_with_its_line(data):
    path = _write(
        data,
        "src_path,tgt_path,ref_path,utt_id\n"
        "a/one.wav,b/one.wav,,ok\n"  # line 2: good
        "a/missing.wav,b/one.wav,,x3\n"  # line 3: missing source file
        "a/two.wav,,,x4\n"  # line 4: empty target
        "a/two.wav\n"  # line 5: too few fields
        "a/two.wav,b/two.wav,nope.wav,x6\n"  # line 6: missing reference file
        "a/two.wav,b/two.wav,,ok\n",  # line 7: duplicate id
    )
    with pytest.raises(DataError) as err:
        read_manifest(path)
    message = str(err.value)
    assert "5 bad row(s)" in message and "line 2:" not in message
    for expected in (
        "line 3: src_path",
        "missing.wav does not exist",
        "line 4: empty tgt_path",
        "line 5: no tgt_path",
        "line 6: ref_path",
        "nope.wav does not exist",
        "line 7: duplicate utt_id ok (first on line 2)",
    ):
        assert expected in message
    # the lines come in file order
    assert message.index("line 3") < message.index("line 4") < message.index("line 7")


def test_missing_required_column_names_found_and_needed(data):
    path = _write(data, "source,tgt_path\na/one.wav,b/one.wav\n")
    with pytest.raises(
        DataError, match=r"missing column\(s\) src_path\. Found: source, tgt_path; needed: src_path"
    ):
        read_manifest(path)


def test_missing_or_empty_manifest(data):
    with pytest.raises(DataError, match="no such file.*data.corpus.path"):
        read_manifest(data / "absent.csv")
    with pytest.raises(DataError, match="no rows"):
        read_manifest(_write(data, "src_path,tgt_path\n"))


def test_manifest_corpus(data):
    corpus = ManifestCorpus(_write(data, "src_path,tgt_path\na/one.wav,b/one.wav\n"))
    corpus.prepare()
    assert corpus.name == "manifest pairs.csv"
    assert (
        corpus.load().summary()
        == "1 pairs (source -> target); dropped 0 ids only in source, 0 only in target"
    )
