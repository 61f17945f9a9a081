"""Collator shapes and masks; length bucketing keeps every sample once and lowers padding."""

import numpy as np
import torch

from vc.data.datamodule import LengthBucketBatchSampler, RandomBatchSampler, VCCollator, padding_fraction


def _item(i, src, frames):
    rng = np.random.default_rng(i)
    return {
        "utt_id": f"u{i}",
        "input_values": rng.standard_normal(src).astype(np.float32),
        "labels": rng.standard_normal((frames, 80)).astype(np.float32),
        "speaker_embeddings": np.ones(512, np.float32) / np.sqrt(512),
    }


def test_collator_pads_and_masks():
    items = [_item(0, 16000, 63), _item(1, 8000, 31), _item(2, 12000, 47)]
    batch = VCCollator(reduction_factor=2)(items)
    assert batch["input_values"].shape == (3, 16000)
    assert batch["attention_mask"].shape == (3, 16000)
    assert batch["attention_mask"].sum(1).tolist() == [16000, 8000, 12000]
    # targets cut to a multiple of the reduction factor
    assert batch["tgt_lengths"].tolist() == [62, 30, 46]
    assert batch["labels"].shape == (3, 62, 80)
    assert torch.all(batch["labels"][1, 30:] == -100) and torch.all(batch["labels"][1, :30] != -100)
    assert torch.all(batch["input_values"][1, 8000:] == 0)
    torch.testing.assert_close(batch["labels"][2, :46], torch.as_tensor(items[2]["labels"][:46]))
    assert batch["speaker_embeddings"].shape == (3, 512)
    assert batch["utt_ids"] == ["u0", "u1", "u2"]


def _lengths(n=400, seed=0):
    # ARCTIC-like target lengths: 1.5-5 s at 62.5 frames/s
    return np.random.default_rng(seed).integers(90, 320, size=n).tolist()


def test_bucketing_keeps_every_sample_exactly_once():
    lengths = _lengths(203)
    sampler = LengthBucketBatchSampler(lengths, batch_size=8, seed=3, pool_batches=10)
    seen = [i for b in sampler for i in b]
    assert sorted(seen) == list(range(203))
    assert len(list(sampler)) == len(sampler)
    sampler.set_epoch(1)
    assert [i for b in sampler for i in b] != seen  # a new order each epoch
    assert sorted(i for b in sampler for i in b) == list(range(203))


def test_bucketing_shards_across_ranks():
    lengths = _lengths(101)
    shards = [list(LengthBucketBatchSampler(lengths, 4, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1  # same number of batches on every rank
    assert all(
        len(s) == len(LengthBucketBatchSampler(lengths, 4, rank=r, world_size=3))
        for r, s in enumerate(shards)
    )
    covered = {i for s in shards for b in s for i in b}
    assert covered == set(range(101))


def test_bucketing_lowers_padding():
    lengths = _lengths()
    bucketed = padding_fraction(lengths, LengthBucketBatchSampler(lengths, 8, seed=0).batches())
    random_ = padding_fraction(lengths, RandomBatchSampler(lengths, 8, seed=0).batches())
    print(f"padding: bucketed {bucketed:.1%}, random {random_:.1%}")
    assert bucketed < random_ / 3
