"""Train/validation/test splits: deterministic, disjoint, complete; SpeechT5's ARCTIC split."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from vc.data.corpus import Pair
from vc.data.splits import split_pairs
from vc.errors import ConfigError, DataError


def _pairs(ids) -> list[Pair]:
    return [Pair(utt_id=i, src_path=Path(f"src/{i}.wav"), tgt_path=Path(f"tgt/{i}.wav")) for i in ids]


def _arctic_ids() -> list[str]:
    """The 1132 ids of CMU ARCTIC: arctic_a0001-a0593 and arctic_b0001-b0539."""
    return [f"arctic_a{i:04d}" for i in range(1, 594)] + [f"arctic_b{i:04d}" for i in range(1, 540)]


def _ids(part) -> list[str]:
    return [p.utt_id for p in part]


def test_random_split_is_deterministic_and_order_free():
    pairs = _pairs(f"utt{i:03d}" for i in range(100))
    a = split_pairs(pairs, seed=1, val_ratio=0.1, test_ratio=0.1)
    shuffled = pairs[:]
    random.Random(0).shuffle(shuffled)
    assert split_pairs(shuffled, seed=1, val_ratio=0.1, test_ratio=0.1) == a
    other = split_pairs(pairs, seed=2, val_ratio=0.1, test_ratio=0.1)
    assert _ids(other.val) != _ids(a.val)


def test_random_split_is_disjoint_and_complete():
    pairs = _pairs(f"utt{i:03d}" for i in range(100))
    s = split_pairs(pairs, seed=3, val_ratio=0.1, test_ratio=0.2)
    assert (len(s.train), len(s.val), len(s.test)) == (70, 10, 20)
    train, val, test = set(_ids(s.train)), set(_ids(s.val)), set(_ids(s.test))
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(_ids(pairs))
    assert _ids(s.train) == sorted(train)


@pytest.mark.parametrize(("n", "n_val"), [(1, 0), (2, 1), (5, 1), (40, 2)])
def test_small_corpora_keep_a_validation_pair(n, n_val):
    s = split_pairs(_pairs(f"u{i}" for i in range(n)), val_ratio=0.05)
    assert len(s.val) == n_val and len(s.train) == n - n_val and not s.test


def test_max_train_pairs_truncates_train_only():
    pairs = _pairs(f"utt{i:03d}" for i in range(50))
    full = split_pairs(pairs, seed=0, val_ratio=0.2)
    cut = split_pairs(pairs, seed=0, val_ratio=0.2, max_train_pairs=5)
    assert len(cut.train) == 5 and set(_ids(cut.train)) <= set(_ids(full.train))
    assert cut.val == full.val and cut.test == full.test


def test_paper_split_on_arctic_ids():
    ids = _arctic_ids()
    pairs = _pairs(ids)
    random.Random(0).shuffle(pairs)
    s = split_pairs(pairs, scheme="paper")
    assert (len(s.train), len(s.val), len(s.test)) == (932, 100, 100)
    assert _ids(s.test) == ids[-100:] and _ids(s.val) == ids[-200:-100] and _ids(s.train) == ids[:932]
    assert _ids(s.test)[0] == "arctic_b0440"


def test_paper_split_needs_201_pairs():
    with pytest.raises(DataError, match="at least 201 pairs.*has 200.*scheme=random"):
        split_pairs(_pairs(f"u{i:03d}" for i in range(200)), scheme="paper")


def test_unknown_scheme_and_bad_ratios_are_config_errors():
    pairs = _pairs(["a", "b", "c"])
    with pytest.raises(ConfigError, match="Unknown split scheme 'speaker'.*random or paper"):
        split_pairs(pairs, scheme="speaker")
    with pytest.raises(ConfigError, match="leave no training data"):
        split_pairs(pairs, val_ratio=0.5, test_ratio=0.5)


def test_no_pairs_is_a_data_error():
    with pytest.raises(DataError, match="No pairs"):
        split_pairs([])
