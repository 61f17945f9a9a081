"""The spectrogram loss agrees with transformers' SpeechT5SpectrogramLoss on the same tensors."""

import pytest
import torch
from transformers import SpeechT5Config
from transformers.models.speecht5.modeling_speecht5 import SpeechT5SpectrogramLoss

from vc.model.loss import SpectrogramLoss, guided_attention_weights


def _batch(seed=0, b=3, t=20, m=80, s=13, layers=2, heads=4, rf=2):
    g = torch.Generator().manual_seed(seed)
    tgt_len = torch.tensor([20, 14, 8])
    src_len = torch.tensor([13, 9, 6])
    labels = torch.randn(b, t, m, generator=g)
    for i, n in enumerate(tgt_len):
        labels[i, n:] = -100.0
    before = torch.randn(b, t, m, generator=g)
    after = torch.randn(b, t, m, generator=g)
    logits = torch.randn(b, t, generator=g)
    enc_mask = (torch.arange(s)[None] < src_len[:, None]).long()
    attn = tuple(torch.softmax(torch.randn(b, heads, t // rf, s, generator=g), -1) for _ in range(layers))
    return before, after, logits, labels, enc_mask, attn


@pytest.mark.parametrize("heads", [1, 2])
def test_matches_transformers(heads):
    before, after, logits, labels, enc_mask, attn = _batch()
    config = SpeechT5Config(
        reduction_factor=2,
        use_guided_attention_loss=True,
        guided_attention_loss_num_heads=heads,
        guided_attention_loss_sigma=0.4,
        guided_attention_loss_scale=10.0,
    )
    expected = SpeechT5SpectrogramLoss(config)(enc_mask, before, after, logits, labels, attn)
    ours = SpectrogramLoss(
        reduction_factor=2, bce_pos_weight=5.0, attn_weight=10.0, attn_sigma=0.4, attn_heads=heads
    )
    parts = ours(before, after, logits, labels, enc_mask, attn)
    torch.testing.assert_close(parts["loss"], expected, rtol=1e-5, atol=1e-6)
    assert parts["attn"] > 0 and parts["bce"] > 0 and parts["l1"] > 0
    torch.testing.assert_close(parts["loss"], parts["l1"] + parts["bce"] + parts["attn"])


def test_without_guided_attention_matches_transformers():
    before, after, logits, labels, enc_mask, _ = _batch(seed=1)
    config = SpeechT5Config(reduction_factor=2, use_guided_attention_loss=False)
    expected = SpeechT5SpectrogramLoss(config)(enc_mask, before, after, logits, labels)
    parts = SpectrogramLoss(attn_weight=0.0)(before, after, logits, labels, enc_mask, None)
    torch.testing.assert_close(parts["loss"], expected)
    assert parts["attn"] == 0


def test_guided_attention_penalises_off_diagonal():
    w = guided_attention_weights(torch.tensor([10]), torch.tensor([10]), 10, 10, 0.4)[0]
    assert torch.all(torch.diagonal(w) == 0)
    assert w[0, 9] > 0.9 and w[9, 0] > 0.9
    padded = guided_attention_weights(torch.tensor([4]), torch.tensor([3]), 10, 10, 0.4)[0]
    assert padded[3:].abs().sum() == 0 and padded[:, 4:].abs().sum() == 0
