"""vc.model.generate computes what transformers' generate_speech computes, per item of a batch.

With the decoder pre-net's dropout off, generation is deterministic, so the loop of our own is
compared number for number with ``SpeechT5ForSpeechToSpeech.generate_speech`` on one input, and
each item of a padded batch with that item generated alone. With the dropout on (SpeechT5 applies
it at inference too), the same seed gives an item the same output whatever it is batched with.
"""

from __future__ import annotations

import pytest
import torch
from transformers import SpeechT5ForSpeechToSpeech

from vc.model.generate import DecoderCache, encode, generate, step_limits
from vc.model.tiny import tiny_speecht5_config

SR = 16_000
NEVER = 3.0  # two stop probabilities never sum to this


def _model(dropout: float):
    torch.manual_seed(0)
    config = tiny_speecht5_config()
    config.speech_decoder_prenet_dropout = dropout
    return SpeechT5ForSpeechToSpeech(config).eval()


def _batch(seconds, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = [int(s * SR) for s in seconds]
    values = torch.zeros(len(lengths), max(lengths))
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        values[i, :n] = 0.1 * torch.randn(n, generator=g)
        mask[i, :n] = 1
    speakers = torch.nn.functional.normalize(torch.randn(len(lengths), 512, generator=g))
    return values, mask, speakers


@pytest.fixture(scope="module")
def model():
    return _model(dropout=0.0)


@pytest.mark.parametrize(
    ("threshold", "minlenratio", "maxlenratio"),
    [(NEVER, 0.0, 1.25), (0.5, 0.0, 2.0), (0.5, 0.6, 2.0), (NEVER, 0.0, 0.01)],
    ids=["runs-to-limit", "stop-token", "min-length", "one-step"],
)
def test_matches_generate_speech(model, threshold, minlenratio, maxlenratio):
    values, mask, speakers = _batch([1.7])
    with torch.inference_mode():
        expected = model.generate_speech(
            values, speakers, threshold=threshold, minlenratio=minlenratio, maxlenratio=maxlenratio
        )
    for separately in (False, True):
        out = generate(
            model,
            values,
            mask,
            speakers,
            threshold=threshold,
            minlenratio=minlenratio,
            maxlenratio=maxlenratio,
            encode_separately=separately,
        )
        assert out.frames == [expected.shape[0]]
        torch.testing.assert_close(out.mels[0], expected, rtol=1e-4, atol=1e-5)
    assert out.stop_reasons == ["max_length" if threshold == NEVER else "stop_token"]


def test_each_item_of_a_batch_is_generated_as_if_alone(model):
    """Per-item length limits and separate encoding: a padded batch gives each item exactly what
    it gets alone (transformers' generate_speech counts the limits from the padded length)."""
    seconds = [1.3, 0.6, 2.1]
    values, mask, speakers = _batch(seconds, seed=1)
    batched = generate(
        model, values, mask, speakers, threshold=NEVER, maxlenratio=1.25, encode_separately=True
    )
    for i, s in enumerate(seconds):
        n = int(s * SR)
        alone = generate(
            model,
            values[i : i + 1, :n],
            mask[i : i + 1, :n],
            speakers[i : i + 1],
            threshold=NEVER,
            maxlenratio=1.25,
        )
        assert batched.frames[i] == alone.frames[0]
        torch.testing.assert_close(batched.mels[i], alone.mels[0], rtol=1e-4, atol=1e-5)
    assert len(set(batched.frames)) == 3, "the items must run to different lengths"


def test_same_seed_same_output_whatever_the_batch():
    """With the pre-net dropout on, one mask per step is shared by the batch, as in SpeechT5."""
    model = _model(dropout=0.5)
    values, mask, speakers = _batch([1.0, 1.8], seed=2)
    torch.manual_seed(7)
    batched = generate(
        model, values, mask, speakers, threshold=NEVER, maxlenratio=1.0, encode_separately=True
    )
    n = int(1.0 * SR)
    torch.manual_seed(7)
    alone = generate(model, values[:1, :n], mask[:1, :n], speakers[:1], threshold=NEVER, maxlenratio=1.0)
    torch.testing.assert_close(batched.mels[0], alone.mels[0], rtol=1e-4, atol=1e-5)
    torch.manual_seed(8)
    other = generate(model, values[:1, :n], mask[:1, :n], speakers[:1], threshold=NEVER, maxlenratio=1.0)
    assert not torch.allclose(other.mels[0], alone.mels[0]), "the dropout must be on"


def test_length_limits_follow_generate_speechs_rule(model):
    r, cap = model.config.reduction_factor, model.config.max_speech_positions
    minlen, maxlen = step_limits(model, [10, 101, 5 * cap], 0.5, 1.0)
    assert maxlen == [10 // r, 101 // r, cap]
    assert minlen == [5 // r, int(101 * 0.5 / r), cap]
    # at least one step, even for an input too short to allow one
    assert step_limits(model, [1], 0.0, 1.0)[1] == [1]


def test_padded_encoding_keeps_per_item_limits(model):
    """The GPU path (one padded encoder batch): each item still stops at its own limit; its values
    move only by the encoder's normalisation over the padding."""
    seconds = [1.3, 0.6]
    values, mask, speakers = _batch(seconds, seed=3)
    batched = generate(model, values, mask, speakers, threshold=NEVER, maxlenratio=1.25)
    for i, s in enumerate(seconds):
        n = int(s * SR)
        alone = generate(
            model,
            values[i : i + 1, :n],
            mask[i : i + 1, :n],
            speakers[i : i + 1],
            threshold=NEVER,
            maxlenratio=1.25,
        )
        assert batched.frames[i] == alone.frames[0]
        assert batched.mels[i].shape == alone.mels[0].shape and torch.isfinite(batched.mels[i]).all()


@pytest.mark.parametrize("first", [1, 3, 64])
def test_decoder_cache_steps_like_transformers_decoder(model, first):
    """DecoderCache against SpeechT5's own decoder with its DynamicCache, step by step, over a
    padded encoder batch; buffers that start at 1 or 3 steps and grow give the same numbers."""
    values, mask, speakers = _batch([1.1, 0.5], seed=4)
    hidden, enc_mask, _ = encode(model, values, mask, separately=True)
    assert (enc_mask == 0).any(), "the cross-attention padding must be exercised"
    decoder = model.speecht5.decoder
    steps = 9
    ours = DecoderCache(decoder, hidden, enc_mask, steps, first=first)
    g = torch.Generator().manual_seed(5)
    inputs = torch.randn(steps, 2, 1, model.config.hidden_size, generator=g)
    cache = None
    with torch.inference_mode():
        for position in range(steps):
            out = decoder.wrapped_decoder(
                hidden_states=inputs[position],
                encoder_hidden_states=hidden,
                encoder_attention_mask=enc_mask,
                cache=cache,
                use_cache=True,
                return_dict=True,
            )
            cache = out.cache
            mine = ours.step(inputs[position], position)
            torch.testing.assert_close(mine, out.last_hidden_state, rtol=1e-5, atol=1e-6)
    assert ours.keys.shape[3] >= steps


def test_training_mode_is_refused():
    model = _model(dropout=0.0).train()
    values, mask, speakers = _batch([0.5])
    with pytest.raises(ValueError, match=r"eval mode: call model.eval\(\) first"):
        generate(model, values, mask, speakers)


def test_cross_attentions_match_generate_speech(model):
    """The recorded cross-attention weights are generate_speech's, layer by layer and head by head."""
    values, mask, speakers = _batch([1.3])
    with torch.inference_mode():
        _, expected = model.generate_speech(
            values, speakers, threshold=NEVER, maxlenratio=1.0, output_cross_attentions=True
        )
    out = generate(
        model, values, mask, speakers, threshold=NEVER, maxlenratio=1.0, output_cross_attentions=True
    )
    (ours,) = out.cross_attentions
    # generate_speech gives (layers, heads, steps, S) for one input
    assert ours.shape[2] * model.config.reduction_factor == out.frames[0]
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.sum(-1), torch.ones(ours.shape[:-1]))
