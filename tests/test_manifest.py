"""CSV manifests: columns, relative paths, default ids, and one error listing every bad row."""

from __future__ import annotations

from pathlib import Path

import pytest

from vc.data.manifest import ManifestCorpus, read_manifest
from vc.errors import DataError


@pytest.fixture
def data(tmp_path) -> Path:
    """A folder with a few (empty) audio files; the manifest only checks that they exist."""
    for name in ("a/one.wav", "a/two.wav", "b/one.wav", "b/two.wav", "ref.wav", "c/one.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
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
