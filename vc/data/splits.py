"""Deterministic train/validation/test splits of a pair list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vc.data.corpus import Pair
from vc.errors import ConfigError, DataError

SCHEMES = ("random", "paper")
# SpeechT5's ARCTIC experiments: in id order, the last 100 utterances test, the 100 before validation.
PAPER_HELD_OUT = 100


@dataclass
class Splits:
    """Three disjoint lists of pairs, each sorted by ``utt_id``."""

    train: list[Pair]
    val: list[Pair]
    test: list[Pair]


def _by_id(pairs) -> list[Pair]:
    return sorted(pairs, key=lambda p: (p.utt_id, str(p.src_path)))


def split_pairs(
    pairs: Sequence[Pair],
    scheme: str = "random",
    seed: int = 42,
    val_ratio: float = 0.05,
    test_ratio: float = 0.0,
    max_train_pairs: int | None = None,
) -> Splits:
    """Split ``pairs`` into train, validation and test -> :class:`Splits`.

    ``random``: a shuffle seeded by ``seed`` of the pairs sorted by id (so the input order does
    not matter); ``round(ratio * n)`` pairs for validation and test, at least one for validation
    when ``val_ratio > 0`` and there are two or more pairs (and likewise for test when a train
    pair is left). ``paper``: in id order, the last 100 pairs test, the 100 before validation,
    the rest train (932/100/100 on ARCTIC); the ratios are ignored. ``max_train_pairs`` then
    keeps that many training pairs (a seeded choice for ``random``, the first ids for ``paper``).
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"Unknown split scheme '{scheme}'. Use data.split.scheme={' or '.join(SCHEMES)}.")
    if not 0 <= val_ratio < 1 or not 0 <= test_ratio < 1 or val_ratio + test_ratio >= 1:
        raise ConfigError(
            f"Split ratios val_ratio={val_ratio}, test_ratio={test_ratio} leave no training data. Each must be "
            "in [0, 1) and their sum below 1 (data.split.val_ratio, data.split.test_ratio)."
        )
    if max_train_pairs is not None and max_train_pairs < 1:
        raise ConfigError(f"data.split.max_train_pairs={max_train_pairs} must be a positive number or null.")
    ordered = _by_id(pairs)
    n = len(ordered)
    if n == 0:
        raise DataError("No pairs to split: the corpus gave none. Check the corpus folder or manifest.")

    if scheme == "paper":
        if n < 2 * PAPER_HELD_OUT + 1:
            raise DataError(
                f"The paper split needs at least {2 * PAPER_HELD_OUT + 1} pairs ({PAPER_HELD_OUT} test, "
                f"{PAPER_HELD_OUT} validation, the rest train); the corpus has {n}. "
                "Use data.split.scheme=random."
            )
        cut = n - 2 * PAPER_HELD_OUT
        train, val, test = ordered[:cut], ordered[cut : n - PAPER_HELD_OUT], ordered[n - PAPER_HELD_OUT :]
        return Splits(train=train[:max_train_pairs], val=val, test=test)

    n_val = min(round(val_ratio * n), n - 1)
    if val_ratio > 0 and n >= 2:
        n_val = max(n_val, 1)
    n_test = round(test_ratio * n)
    if test_ratio > 0 and n - n_val >= 2:
        n_test = max(n_test, 1)
    # rounding up to one pair each must still leave a training pair
    n_test = min(n_test, n - n_val - 1)
    order = np.random.default_rng(seed).permutation(n)
    test = [ordered[i] for i in order[:n_test]]
    val = [ordered[i] for i in order[n_test : n_test + n_val]]
    train = [ordered[i] for i in order[n_test + n_val :]][:max_train_pairs]
    return Splits(train=_by_id(train), val=_by_id(val), test=_by_id(test))
