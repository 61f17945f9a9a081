"""VCDataModule: corpus -> pairs -> splits -> cached features + x-vectors -> bucketed batches.

``prepare_data`` (rank 0 only) downloads or writes the corpus, computes the features and
warms the x-vector cache; ``setup`` (every rank) reads them back from the caches.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vc.data.features import BadFile, build_features
from vc.data.splits import split_pairs
from vc.errors import DataError

log = logging.getLogger(__name__)

# the splits training uses; an empty test split only leaves eval.py nothing to score
NEEDED_SPLITS = ("train", "val")
# how many left-out files an empty split's message lists
MAX_LISTED = 10


class VCCollator:
    """Pads a list of items into a batch.

    Items are dicts with ``input_values`` (T,), ``labels`` (F, M), ``speaker_embeddings`` (512,)
    and ``utt_id``. Targets are cut to a multiple of ``reduction_factor`` frames (the decoder
    emits that many per step). Returns ``input_values`` (B, T) zero-padded with
    ``attention_mask`` (B, T), ``labels`` (B, F, M) padded with -100, ``speaker_embeddings``
    (B, 512), ``src_lengths`` / ``tgt_lengths`` (B,) and ``utt_ids``.
    """

    def __init__(self, reduction_factor: int = 2):
        self.reduction_factor = reduction_factor

    def __call__(self, items: Sequence[Mapping]) -> dict:
        rf = self.reduction_factor
        src_lengths = torch.tensor([len(x["input_values"]) for x in items])
        tgt_lengths = torch.tensor([len(x["labels"]) // rf * rf for x in items])
        n_mels = items[0]["labels"].shape[-1]
        b = len(items)
        input_values = torch.zeros(b, int(src_lengths.max()))
        attention_mask = torch.zeros(b, int(src_lengths.max()), dtype=torch.long)
        labels = torch.full((b, int(tgt_lengths.max()), n_mels), -100.0)
        for i, x in enumerate(items):
            input_values[i, : src_lengths[i]] = torch.as_tensor(x["input_values"])
            attention_mask[i, : src_lengths[i]] = 1
            labels[i, : tgt_lengths[i]] = torch.as_tensor(x["labels"][: tgt_lengths[i]])
        return {
            "input_values": input_values,
            "attention_mask": attention_mask,
            "labels": labels,
            "speaker_embeddings": torch.stack(
                [torch.as_tensor(x["speaker_embeddings"]) for x in items]
            ).float(),
            "src_lengths": src_lengths,
            "tgt_lengths": tgt_lengths,
            "utt_ids": [x["utt_id"] for x in items],
        }


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions when ``batches`` (lists of indices) are padded to their longest item."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / max(total, 1)


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length, in random order, sharded across DDP ranks.

    Each epoch the indices are shuffled, cut into pools of ``batch_size * pool_batches``,
    each pool sorted by length and cut into batches; the batches are then shuffled and rank
    ``r`` of ``world_size`` takes every ``world_size``-th one. Every rank gets the same number
    of batches (a few are repeated when they do not divide evenly), so DDP never waits on a
    missing batch; with one rank every index appears exactly once per epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool = batch_size * pool_batches
        self.rank, self.world_size = rank, world_size
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at every epoch so the order changes."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """All batches of this epoch, before sharding."""
        rng = random.Random(self.seed + self.epoch)
        idx = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(idx)
        out: list[list[int]] = []
        for start in range(0, len(idx), self.pool):
            pool = sorted(idx[start : start + self.pool], key=lambda i: self.lengths[i])
            out += [pool[j : j + self.batch_size] for j in range(0, len(pool), self.batch_size)]
        if self.drop_last:
            out = [b for b in out if len(b) == self.batch_size]
        if self.shuffle:
            rng.shuffle(out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        per_rank = math.ceil(len(batches) / self.world_size)
        batches += batches[: per_rank * self.world_size - len(batches)]
        yield from batches[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(self.lengths)
        if not self.drop_last:
            # pools cut at batch_size boundaries except the last pool's tail
            full, rest = divmod(n, self.pool)
            n_batches = full * math.ceil(self.pool / self.batch_size) + math.ceil(rest / self.batch_size)
        else:
            full, rest = divmod(n, self.pool)
            n_batches = full * (self.pool // self.batch_size) + rest // self.batch_size
        return math.ceil(n_batches / self.world_size)


class RandomBatchSampler(LengthBucketBatchSampler):
    """Random batches without length sorting (the baseline that bucketing is compared with)."""

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        idx = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(idx)
        out = [idx[j : j + self.batch_size] for j in range(0, len(idx), self.batch_size)]
        return [b for b in out if len(b) == self.batch_size] if self.drop_last else out


class VCDataset(Dataset):
    """Cached features plus each pair's target speaker embedding, as numpy arrays."""

    def __init__(self, features, embeddings: Mapping[str, np.ndarray]):
        self.features = features.with_format("numpy")
        self.embeddings = embeddings
        self.utt_ids = list(features["utt_id"])
        self.tgt_lengths = [int(n) for n in features["tgt_len"]]
        self.src_lengths = [int(n) for n in features["src_len"]]

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getitem__(self, i: int) -> dict:
        row = self.features[int(i)]
        return {
            "utt_id": self.utt_ids[i],
            "input_values": row["input_values"].astype(np.float32),
            "labels": row["labels"].astype(np.float32),
            "speaker_embeddings": self.embeddings[self.utt_ids[i]],
        }


@dataclass
class DataReport:
    """What preparing the data found; ``str()`` is the summary printed to the user."""

    corpus: str = ""
    pairing: str = ""
    splits: dict = field(default_factory=dict)
    bad_files: list[BadFile] = field(default_factory=list)
    feature_cache_hit: bool = False
    xvector_hits: int = 0
    xvector_misses: int = 0
    padding: dict = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [
            f"corpus        {self.corpus}",
            f"pairs         {self.pairing}",
            "splits        " + ", ".join(f"{k} {v}" for k, v in self.splits.items()),
            f"bad files     {len(self.bad_files)} left out"
            + "".join(f"\n  {b.reason}" for b in self.bad_files[:10]),
            f"features      {'cache hit' if self.feature_cache_hit else 'computed and cached'}",
            f"x-vectors     {self.xvector_hits} cache hits, {self.xvector_misses} computed",
        ]
        if self.padding:
            lines.append(
                "padding       "
                + ", ".join(f"{k} {v:.1%}" for k, v in self.padding.items())
                + " of target frames in a train epoch"
            )
        return "\n".join(lines)


class VCDataModule(pl.LightningDataModule):
    """Parallel voice-conversion data for Lightning.

    Args:
        corpus: an object with ``prepare()``, ``load() -> PairingResult`` and ``name``
            (:class:`vc.data.arctic.ArcticCorpus`, ``SyntheticCorpus``, ``ManifestCorpus``).
        src_spk, tgt_spk: speaker names, for logs and the bundle (the corpus does the pairing).
        split: keyword arguments of :func:`vc.data.splits.split_pairs`.
        speaker: x-vector settings (source, mode, cache_dir, device, use_precomputed_xvectors, precomputed_repo).
        audio: the audio settings (sample rate, mel bins, hop, window, fmin, fmax).
        feature_cache_dir: root of the `datasets` feature cache.
        batch_size, num_workers: loader settings.
        bucket: length-bucketed batches (else random batches).
        max_source_seconds, max_target_frames: longer pairs are left out (None keeps all).
        on_bad_file: ``skip`` or ``error`` for unusable audio.
        val_samples: how many fixed validation utterances are generated for audio logs.
        reduction_factor: the model's decoder reduction factor (targets are cut to a multiple).
    """

    def __init__(
        self,
        corpus,
        split: Mapping,
        speaker: Mapping,
        audio: Mapping,
        feature_cache_dir: str,
        src_spk: str | None = None,
        tgt_spk: str | None = None,
        batch_size: int = 2,
        num_workers: int = 0,
        bucket: bool = True,
        max_source_seconds: float | None = None,
        max_target_frames: int | None = None,
        on_bad_file: str = "skip",
        val_samples: int = 4,
        reduction_factor: int = 2,
    ):
        super().__init__()
        self.corpus = corpus
        self.split_cfg = dict(split)
        self.speaker_cfg = dict(speaker)
        self.audio = dict(audio)
        self.feature_cache_dir = feature_cache_dir
        self.src_spk, self.tgt_spk = src_spk, tgt_spk
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.bucket = bucket
        self.max_source_seconds = max_source_seconds
        self.max_target_frames = max_target_frames
        self.on_bad_file = on_bad_file
        self.val_samples = val_samples
        self.collate = VCCollator(reduction_factor)
        self.report = DataReport()
        self.datasets: dict[str, VCDataset] = {}
        self.splits = None

    # -- pipeline -------------------------------------------------------------------------------
    def _splits(self):
        pairing = self.corpus.load()
        self.report.corpus = getattr(self.corpus, "name", type(self.corpus).__name__)
        self.report.pairing = pairing.summary()
        splits = split_pairs(pairing.pairs, **self.split_cfg)
        return {"train": splits.train, "val": splits.val, "test": splits.test}

    def _embeddings(self, splits) -> dict[str, np.ndarray]:
        from vc.data.speakers import embeddings_for_pairs

        vectors, hits, misses = embeddings_for_pairs(
            [p for part in splits.values() for p in part],
            train_ids={p.utt_id for p in splits["train"]},
            **self.speaker_cfg,
        )
        self.report.xvector_hits, self.report.xvector_misses = hits, misses
        return vectors

    def _length_ok(self, row_src: int, row_tgt: int) -> bool:
        if self.max_source_seconds and row_src > self.max_source_seconds * self.audio["sample_rate"]:
            return False
        return not (self.max_target_frames and row_tgt > self.max_target_frames)

    def _build(self, splits) -> dict:
        """Each non-empty split's features -> ``{name: (features within the length limits, bad files,
        ids over the limits, cache hit)}``."""
        built = {}
        for name, part in splits.items():
            if not part:
                continue
            feats, bad, hit = build_features(part, self.audio, self.feature_cache_dir, self.on_bad_file)
            fits = [self._length_ok(s, t) for s, t in zip(feats["src_len"], feats["tgt_len"])]
            too_long = [u for u, ok in zip(feats["utt_id"], fits) if not ok]
            if too_long:
                feats = feats.select([i for i, ok in enumerate(fits) if ok])
            built[name] = (feats, bad, too_long, hit)
        return built

    def prepare_data(self) -> None:
        """Download or write the corpus, compute features and x-vectors into their caches (rank 0)."""
        self.corpus.prepare()
        splits = self._splits()
        built = self._build(splits)
        self._check_splits(splits, built)
        self._embeddings(self._usable(splits, built))
        # the summary reports what preparing did; setup() then only re-reads the caches
        self._prepared = (
            all(b[3] for b in built.values()),
            self.report.xvector_hits,
            self.report.xvector_misses,
        )

    @staticmethod
    def _usable(splits, built) -> dict:
        """The pairs of each split whose audio could be used (x-vectors need readable targets)."""
        bad = {b.utt_id for _, found, _, _ in built.values() for b in found}
        return {name: [p for p in part if p.utt_id not in bad] for name, part in splits.items()}

    def _check_splits(self, splits, built) -> list[str]:
        """One message per split left with no usable pair: the split, the files left out and the fix.

        Raises a :class:`DataError` with all of them when a split training needs (train, val) is
        among them; otherwise returns them (a test split whose every pair is unusable: only
        eval.py needs it).
        """
        empty = {name: self._empty_split(name, splits, built.get(name)) for name in splits}
        messages = [m for m in empty.values() if m]
        if any(empty[name] for name in NEEDED_SPLITS):
            raise DataError(f"{self.report.corpus}: " + "\n".join(messages))
        return messages

    def _empty_split(self, name: str, splits, record) -> str | None:
        """Why split ``name`` has no usable pair and how to fix it, or None when it has one (or
        was meant to be empty: a test split with data.split.test_ratio=0)."""
        part = splits[name]
        if record is not None and len(record[0]):
            return None
        total = sum(len(p) for p in splits.values())
        if not part:
            if name not in NEEDED_SPLITS:
                return None
            if name == "val" and total < 2:
                return (
                    f"the val split is empty: the corpus has {total} pair, and training needs two or more "
                    "(one to train on, one to validate). Add pairs."
                )
            settings = ", ".join(f"{k}={v}" for k, v in self.split_cfg.items())
            return (
                f"the {name} split is empty: data.split ({settings}) gives it none of the {total} pairs. "
                + (
                    "Set data.split.val_ratio above 0 (validation chooses the checkpoints)."
                    if name == "val"
                    else "Lower data.split.val_ratio and data.split.test_ratio."
                )
            )
        _, bad, too_long, _ = record
        left_out = "its only pair was" if len(part) == 1 else f"all {len(part)} of its pairs were"
        lines = [f"the {name} split is empty: {left_out} left out:"]
        lines += [f"  {b.reason}" for b in bad[:MAX_LISTED]]
        if len(bad) > MAX_LISTED:
            lines.append(f"  ... and {len(bad) - MAX_LISTED} more unusable file(s)")
        if too_long:
            lines.append(
                f"  {len(too_long)} over the length limits (data.max_source_seconds={self.max_source_seconds}, "
                f"data.max_target_frames={self.max_target_frames}): {', '.join(too_long[:MAX_LISTED])}"
                + (" ..." if len(too_long) > MAX_LISTED else "")
            )
        fixes = []
        if bad:
            fixes.append(
                "Repair or replace those files, or remove their pairs from the corpus (the split is then "
                "drawn again from the rest)."
            )
        if too_long:
            fixes.append("Raise the length limits or set them to null.")
        return "\n".join(lines + [" ".join(fixes)])

    def setup(self, stage: str | None = None) -> None:
        """Read features and x-vectors from the caches and build the split datasets."""
        if self.datasets:
            return
        self.splits = self._splits()
        built = self._build(self.splits)
        for message in self._check_splits(self.splits, built):
            log.warning("%s: %s", self.report.corpus, message)
        embeddings = self._embeddings(self._usable(self.splits, built))
        self.report.bad_files = [b for _, found, _, _ in built.values() for b in found]
        self.report.feature_cache_hit = all(hit for *_, hit in built.values())
        for name, (feats, _, too_long, _) in built.items():
            if too_long:
                log.info("%s: left out %d pair(s) longer than the length limits", name, len(too_long))
            self.datasets[name] = VCDataset(feats, embeddings)
        self.report.splits = {k: len(v) for k, v in self.datasets.items()}
        if getattr(self, "_prepared", None):
            self.report.feature_cache_hit, self.report.xvector_hits, self.report.xvector_misses = (
                self._prepared
            )
        train = self.datasets["train"]
        self.report.padding = {
            "bucketed": padding_fraction(train.tgt_lengths, self._sampler(train, True, False).batches()),
            "random": padding_fraction(train.tgt_lengths, self._sampler(train, True, True).batches()),
        }

    # -- loaders ------------------------------------------------------------------------------------
    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _sampler(self, ds: VCDataset, shuffle: bool, random_batches: bool = False):
        rank, world = self._rank()
        cls = RandomBatchSampler if random_batches else LengthBucketBatchSampler
        return cls(
            ds.tgt_lengths,
            self.batch_size,
            shuffle=shuffle,
            seed=int(self.split_cfg.get("seed", 0)),
            rank=rank,
            world_size=world,
        )

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        ds = self.datasets[name]
        return DataLoader(
            ds,
            batch_sampler=self._sampler(ds, shuffle, random_batches=shuffle and not self.bucket),
            collate_fn=self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # page-locked batches copy to a GPU without blocking the training loop
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def val_sample_batch(self) -> dict:
        """The first ``val_samples`` validation utterances (by id), collated: fixed across epochs."""
        ds = self.datasets["val"]
        order = sorted(range(len(ds)), key=lambda i: ds.utt_ids[i])[: self.val_samples]
        return self.collate([ds[i] for i in order])
