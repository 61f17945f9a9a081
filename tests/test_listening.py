"""Listening tests: matching files, blinded and seeded trials, the key, the ratings CSV, CIs and the binomial test."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, t

from vc import listening
from vc.audio import SAMPLE_RATE, write_wav
from vc.errors import ConfigError, DataError

SYSTEMS = ("baseline", "finetuned")
UTTS = ("utt_a", "utt_b", "utt_c")


def write_listening_folders(root: Path, utts=UTTS, systems=SYSTEMS) -> dict[str, Path]:
    """Tiny tone WAVs in the layout of two eval.py runs plus the corpus folders: ``<system>/converted/``,
    ``source/``, ``target/`` and ``reference.wav`` under ``root``. Returns those paths by name."""
    rng = np.random.default_rng(0)
    time = np.arange(int(0.3 * SAMPLE_RATE)) / SAMPLE_RATE

    def tone(hz: float) -> np.ndarray:
        return (0.3 * np.sin(2 * np.pi * hz * time) + 0.01 * rng.standard_normal(time.size)).astype(
            np.float32
        )

    paths = {"source": root / "source", "target": root / "target", "reference": root / "reference.wav"}
    write_wav(paths["reference"], tone(230))
    for k, utt in enumerate(utts):
        write_wav(paths["source"] / f"{utt}.wav", tone(120 + 10 * k))
        write_wav(paths["target"] / f"{utt}.wav", tone(220 + 10 * k))
        for s, system in enumerate(systems):
            write_wav(root / system / "converted" / f"{utt}.wav", tone(200 + 10 * k + 5 * s))
    paths.update({system: root / system / "converted" for system in systems})
    return paths


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    return write_listening_folders(tmp_path / "samples")


@pytest.fixture
def systems(folders) -> dict[str, list[listening.Item]]:
    return listening.load_systems(
        {name: folders[name] for name in SYSTEMS}, folders["source"], folders["target"], folders["reference"]
    )


def _rows(store_path: Path, rows: list[tuple[str, str, object]], rater: str = "alice") -> list[dict]:
    """Write (trial id, question, answer) rows through a RatingStore and read them back for aggregation."""
    store = listening.RatingStore(store_path)
    for trial_id, question, answer in rows:
        store.add(rater, trial_id, {question: answer})
    return listening.read_ratings(store_path)


def test_items_match_by_utterance_id(folders, tmp_path):
    write_wav(folders["source"] / "only_in_source.wav", np.full(1600, 0.1, np.float32))
    (folders["target"] / "utt_b.wav").unlink()
    items = listening.find_items(
        folders["finetuned"], folders["source"], folders["target"], folders["reference"]
    )
    assert [i.utt_id for i in items] == list(UTTS)
    assert all(i.source == folders["source"] / f"{i.utt_id}.wav" for i in items)
    assert all(i.reference == folders["reference"] for i in items)
    assert [i.target is None for i in items] == [False, True, False]
    assert list(items[1].files()) == ["source", "reference", "converted"]
    # a reference folder is matched by utterance id too
    by_utt = listening.find_items(folders["finetuned"], reference=folders["source"])
    assert [i.reference.name for i in by_utt] == [f"{u}.wav" for u in UTTS]

    write_wav(folders["finetuned"] / "sub" / "utt_a.flac", np.full(1600, 0.1, np.float32))
    with pytest.raises(DataError, match="two files for utterance 'utt_a'"):
        listening.find_items(folders["finetuned"])
    with pytest.raises(DataError, match="no such folder"):
        listening.find_items(tmp_path / "missing")
    with pytest.raises(DataError, match="reference=.*no such file or folder"):
        listening.find_items(folders["finetuned"], reference=tmp_path / "ref.wav")


def test_ground_truth_joins_as_a_system(systems, folders):
    assert list(systems) == [*SYSTEMS, "ground truth"]
    assert [i.converted for i in systems["ground truth"]] == [folders["target"] / f"{u}.wav" for u in UTTS]


def test_mos_trials_are_complete_seeded_and_blinded(systems):
    session = listening.mos_session(systems, "alice", seed=3)
    played = sorted((e["system"], e["utt_id"]) for e in session.key.values())
    assert played == sorted((s, u) for s in systems for u in UTTS)
    assert [t.trial_id for t in session.trials] == [f"alice-mos-{n:03d}" for n in range(1, 10)]

    again = listening.mos_session(systems, "alice", seed=3)
    assert again.trials == session.trials and again.key == session.key
    order = [(e["system"], e["utt_id"]) for e in session.key.values()]
    other_rater = listening.mos_session(systems, "bob", seed=3)
    assert sorted(order) == sorted((e["system"], e["utt_id"]) for e in other_rater.key.values())
    assert order != [(e["system"], e["utt_id"]) for e in other_rater.key.values()]
    assert order != [(s, u) for s in systems for u in UTTS], "not shuffled"

    for trial in session.trials:
        shown = [trial.trial_id, trial.test, *trial.audio, *trial.questions]
        assert not any(name in text for name in systems for text in shown)
        entry = session.key[trial.trial_id]
        assert trial.audio["sample"] == next(
            i.converted for i in systems[entry["system"]] if i.utt_id == entry["utt_id"]
        )
        assert trial.questions == ("naturalness", "similarity")

    capped = listening.mos_session(systems, "alice", max_per_system=2)
    assert len(capped.trials) == 6
    with pytest.raises(ConfigError, match="rater"):
        listening.mos_session(systems, "alice smith")


def test_similarity_needs_a_reference_other_than_the_sample(folders):
    systems = listening.load_systems({"finetuned": folders["finetuned"]}, target=folders["target"])
    session = listening.mos_session(systems, "alice")
    questions = {e["system"]: t.questions for t in session.trials for e in [session.key[t.trial_id]]}
    assert questions == {"finetuned": ("naturalness", "similarity"), "ground truth": ("naturalness",)}


def test_ab_key_reveals_the_system_on_each_side(folders):
    utts = [f"utt_{k:02d}" for k in range(16)]
    write_listening_folders(folders["source"].parent, utts)
    systems = listening.load_systems({name: folders[name] for name in SYSTEMS})
    session = listening.ab_session(systems, "alice", seed=1)
    assert len(session.trials) == len(utts) + len(UTTS)
    sides = set()
    for trial in session.trials:
        entry = session.key[trial.trial_id]
        assert trial.questions == ("preference",) and set(trial.audio) == {"A", "B"}
        assert not any(name in trial.trial_id for name in SYSTEMS)
        for side in ("A", "B"):
            # the file on each side is the named system's conversion of this utterance
            assert trial.audio[side] == folders[entry[side]] / f"{entry['utt_id']}.wav"
            assert listening.reveal(session.key, trial.trial_id, side) == entry[side]
        assert listening.reveal(session.key, trial.trial_id, "none") is None
        assert entry["pair"] == list(SYSTEMS)
        sides.add(entry["A"])
    assert sides == set(SYSTEMS), "the left/right order is not randomised"
    assert listening.ab_session(systems, "alice", seed=1).key == session.key
    assert listening.ab_session(systems, "alice", seed=2).key != session.key
    with pytest.raises(ConfigError, match="exactly two"):
        listening.ab_session({"baseline": systems["baseline"]}, "alice")


def test_ab_pair_defaults_to_the_first_two_systems_and_says_why_there_is_none(systems):
    """``systems``: baseline, finetuned and the ground truth."""
    assert listening.ab_pair(systems).names == SYSTEMS
    assert listening.ab_pair(systems, " finetuned , ground truth ").names == ("finetuned", "ground truth")
    # one system (the ground truth does not count): MOS only, and the note says why
    one = listening.ab_pair({"mine": [], "ground truth": []})
    assert one.names == () and "needs two systems and there is one (`mine`)" in one.note
    assert "VC_SYSTEMS" in one.note
    # a pair naming systems that are not there: no A/B test, and the systems there are
    for pair, why in [
        ("finetuned,pretrained", "no system 'pretrained'"),
        ("finetuned", "name two different systems"),
        ("finetuned,finetuned", "name two different systems"),
        ("baseline,finetuned,ground truth", "name two different systems"),
    ]:
        choice = listening.ab_pair(systems, pair)
        assert choice.names == (), pair
        assert choice.note.startswith(
            f"VC_AB_PAIR={pair}: {why}; the systems are `baseline`, `finetuned`, `ground truth`."
        ), choice.note


def test_ratings_csv_round_trip(tmp_path):
    path = listening.ratings_path(tmp_path, "alice")
    store = listening.RatingStore(path)
    assert store.rows() == []
    store.add("alice", "alice-mos-001", {"naturalness": 4, "similarity": 2})
    store.add("alice", "alice-ab-001", {"preference": "B"})
    store.add("alice", "alice-mos-001", {"naturalness": 5})
    rows = store.rows()
    assert [(r["trial_id"], r["question"], r["answer"]) for r in rows] == [
        ("alice-mos-001", "naturalness", "4"),
        ("alice-mos-001", "similarity", "2"),
        ("alice-ab-001", "preference", "B"),
        ("alice-mos-001", "naturalness", "5"),
    ]
    assert all(r["rater"] == "alice" and r["timestamp"].endswith("Z") for r in rows)
    with path.open(newline="") as f:
        assert next(csv.reader(f)) == list(listening.RATING_FIELDS)
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file is renamed into place"
    # the last answer to a question counts
    latest = {(r["trial_id"], r["question"]): r["answer"] for r in listening.read_ratings(tmp_path)}
    assert latest == {
        ("alice-mos-001", "naturalness"): "5",
        ("alice-mos-001", "similarity"): "2",
        ("alice-ab-001", "preference"): "B",
    }


def test_key_is_stored_apart_and_guards_against_changed_sessions(systems, tmp_path):
    session = listening.mos_session(systems, "alice")
    path = listening.save_key(session, tmp_path)
    assert path.name == "key_alice_mos.json"
    assert listening.save_key(session, tmp_path) == path
    assert listening.load_key(tmp_path) == session.key
    changed = listening.mos_session(systems, "alice", seed=1)
    with pytest.raises(ConfigError, match="different mos session"):
        listening.save_key(changed, tmp_path)


def test_mos_aggregation_on_known_ratings(tmp_path):
    key = {
        "r-mos-001": {"test": "mos", "system": "x", "utt_id": "u1"},
        "r-mos-002": {"test": "mos", "system": "x", "utt_id": "u2"},
        "r-mos-003": {"test": "mos", "system": "x", "utt_id": "u3"},
        "r-mos-004": {"test": "mos", "system": "y", "utt_id": "u1"},
    }
    rows = _rows(
        tmp_path / "ratings.csv",
        [
            ("r-mos-001", "naturalness", 3),
            ("r-mos-002", "naturalness", 4),
            ("r-mos-003", "naturalness", 5),
            ("r-mos-001", "similarity", 2),
            ("r-mos-002", "similarity", 2),
            ("r-mos-004", "naturalness", 1),
        ],
    )
    results = {(r.system, r.question): r for r in listening.mos_results(rows, key)}
    assert list(results) == [("x", "naturalness"), ("x", "similarity"), ("y", "naturalness")]
    ordered = listening.mos_results(rows, key, order=["y", "unrated"])
    assert [(r.system, r.question) for r in ordered] == [
        ("y", "naturalness"),
        ("x", "naturalness"),
        ("x", "similarity"),
    ]
    x = results["x", "naturalness"]
    half = t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # three ratings 3, 4, 5: sd 1
    assert (
        (x.n, x.mean) == (3, 4.0) and x.low == pytest.approx(4 - half) and x.high == pytest.approx(4 + half)
    )
    similarity = results["x", "similarity"]
    assert (similarity.mean, similarity.low, similarity.high) == (2.0, 2.0, 2.0)
    assert results["y", "naturalness"].n == 1 and math.isnan(results["y", "naturalness"].low)
    assert "| x | naturalness | 3 | 4.00 |" in listening.mos_table(list(results.values()))
    with pytest.raises(DataError, match="no key"):
        listening.mos_results(rows, {})


def test_ab_aggregation_and_binomial_test_on_a_known_split(tmp_path):
    key, answers = {}, []
    # 8 answers for "new", 2 for "old", 1 tie, with "new" on side A for the first half only
    for n, winner in enumerate(["new"] * 8 + ["old"] * 2 + [None]):
        trial_id = f"r-ab-{n:03d}"
        a, b = ("new", "old") if n < 5 else ("old", "new")
        key[trial_id] = {"test": "ab", "A": a, "B": b, "pair": ["new", "old"], "utt_id": f"u{n}"}
        answers.append((trial_id, "preference", "none" if winner is None else "A" if winner == a else "B"))
    (result,) = listening.ab_results(_rows(tmp_path / "ratings.csv", answers), key)
    expected = binomtest(8, 10, 0.5)
    ci = expected.proportion_ci(0.95, method="exact")
    assert result.systems == ("new", "old") and result.wins == (8, 2) and result.ties == 1
    assert result.preference == 0.8
    assert result.p_value == pytest.approx(0.109375) == pytest.approx(expected.pvalue)
    assert (result.low, result.high) == pytest.approx((ci.low, ci.high))
    assert result.low < 0.5 < result.high, "8 of 10 is not significant at 5 %"
    assert "| new | old | 8 | 2 | 1 | 80% (44-97%) | 0.109 |" in listening.ab_table([result])


def test_forms_store_answers_blind_and_resume(systems, tmp_path):
    session = listening.mos_session(systems, "alice", seed=0)
    store = listening.RatingStore(listening.ratings_path(tmp_path, "alice"))
    form = listening.RatingForm(session, store)

    def texts(widget) -> list[str]:
        out = [str(getattr(widget, name, "")) for name in ("value", "description", "options")]
        return out + [text for child in getattr(widget, "children", ()) for text in texts(child)]

    shown = " ".join(t for t in texts(form.widget) if not t.startswith("b'"))
    assert "Trial 1 of 9" in shown
    assert not any(name in shown for name in systems) and "utt_" not in shown

    assert not form.save() and "naturalness" in form.status.value
    form.choose(naturalness=4, similarity=5)
    form.save_button.click()
    assert store.rows()[0]["trial_id"] == session.trials[0].trial_id
    assert not any(name in path.read_text() for name in systems for path in [store.path])

    resumed = listening.RatingForm(session, store)
    assert resumed.current == session.trials[1]
    assert listening.simulate_ratings(resumed, seed=0) == 8
    assert resumed.current is None and "All 9 trials answered" in resumed.header.value
    assert listening.answered(session, store.rows()) == {t.trial_id for t in session.trials}


def test_result_figures_with_and_without_ratings(tmp_path):
    from vc.plots import plt

    mos = [
        listening.MosResult("x", "naturalness", 3, 4.0, 3.0, 5.0),
        listening.MosResult("x", "similarity", 1, 2, math.nan, math.nan),
    ]
    ab = [listening.ABResult(("new", "old"), (8, 2), 1, 0.8, 0.44, 0.97, 0.11)]
    for fig in (
        listening.mos_figure(mos),
        listening.mos_figure([]),
        listening.ab_figure(ab),
        listening.ab_figure([]),
    ):
        assert fig.axes
        plt.close(fig)


def test_parse_systems(tmp_path):
    assert listening.parse_systems(" a=out/a/converted, b=/x/y ,") == {"a": "out/a/converted", "b": "/x/y"}
    with pytest.raises(ConfigError, match="name=folder"):
        listening.parse_systems("just/a/folder")
    with pytest.raises(ConfigError, match="two systems named 'a'"):
        listening.parse_systems("a=x,a=y")
    assert listening.parse_systems("", eval_root=None) == {}


def test_no_systems_given_takes_the_newest_eval_run(tmp_path):
    """VC_SYSTEMS unset: the converted/ folder of the newest eval.py output (one holding summary.json)."""
    import os

    root = tmp_path / "eval"
    with pytest.raises(DataError, match=r"systems: none given, and no eval.py output .*VC_SYSTEMS"):
        listening.parse_systems(" ", eval_root=root)
    for age, name in enumerate(("new", "old", "no_audio")):
        run = root / "runs" / name
        (run / "converted").mkdir(parents=True)
        (run / "summary.json").write_text("{}")
        os.utime(run, (1e9 - age, 1e9 - age))
    (root / "runs" / "no_audio" / "converted").rmdir()
    os.utime(root / "runs" / "no_audio", (2e9, 2e9))  # the newest, but without converted audio
    assert listening.parse_systems("", eval_root=root) == {"new": str(root / "runs" / "new" / "converted")}


def test_missing_folders_name_the_setting_and_where_relative_paths_start(folders, tmp_path, monkeypatch):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    monkeypatch.chdir(notebooks)
    # a path typed relative to the repository, read in the notebooks folder
    with pytest.raises(DataError) as err:
        listening.load_systems({"mine": "samples/baseline/converted"})
    assert str(err.value) == (
        f"mine=samples/baseline/converted: no such folder (relative paths start in {notebooks}; "
        "../samples/baseline/converted exists). Point mine at a folder of audio files."
    )
    with pytest.raises(DataError, match=r"source=nowhere: no such folder .*or leave it empty"):
        listening.find_items(folders["baseline"], source="nowhere")
    with pytest.raises(DataError, match=r"reference=nowhere.wav: no such file or folder .*leave it empty"):
        listening.find_items(folders["baseline"], reference="nowhere.wav")
