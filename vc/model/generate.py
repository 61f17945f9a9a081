"""Batched SpeechT5 speech generation: ``generate_speech``'s algorithm, without its per-step waste.

transformers' ``SpeechT5ForSpeechToSpeech.generate_speech`` is the reference. This loop computes
the same function (tests/test_generate.py checks it against ``generate_speech`` with the pre-net's
dropout off) and differs only in how it spends time:

- The decoder pre-net runs on the newest frame only. ``generate_speech`` reruns it over the whole
  output at every step and keeps the last row, so its cost grows with the square of the length.
  The pre-net's dropout (applied at inference too, one mask for the whole batch) draws a fresh
  mask for the newest frame, which is what the last row of ``generate_speech``'s mask is.
- Stopping is checked every ``check_every`` steps, from stop probabilities kept on the device:
  ``generate_speech`` copies them to the host at every step, which stalls a GPU. The extra steps
  a finished item takes are thrown away; its output ends where it would have stopped.
- Length limits are per item: ``minlenratio`` and ``maxlenratio`` count from each input's own
  encoder length (``generate_speech`` counts both from the batch's padded length), so an item's
  output does not depend on what it is batched with.
- ``encode_separately`` encodes each input alone at its own length. The encoder's first conv
  layer normalises over the whole (padded) input, so batching changes the encoding a little; on
  a CPU, where the encoder is compute-bound, encoding one at a time is also faster (no padding).
- The decoder's self-attention keys and values are written into buffers that double when full
  (:class:`DecoderCache`), and the encoder's are projected once. transformers'
  ``DynamicCache`` concatenates every layer's keys and values at every step, which copies the
  whole cache each time: a tenth of the decoder's time on a CPU at batch 8, and growing with the
  square of the output length. The layers' own modules do the arithmetic, in the same order.
- The post-net runs once per item on that item's own frames, as ``generate_speech`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

# stop probabilities are copied to the host this often (in decoder steps)
CHECK_EVERY = 8


@dataclass
class Generated:
    """``mels``: per item a (frames, num_mel_bins) log-mel after the post-net. ``stop_reasons``:
    "stop_token", or "max_length" when the item ran to its limit. ``cross_attentions``: with
    ``output_cross_attentions``, per item a (layers, heads, steps, encoder frames) tensor of the
    decoder's cross-attention weights over that item's own steps and encoder frames."""

    mels: list[torch.Tensor]
    stop_reasons: list[str]
    cross_attentions: list[torch.Tensor] | None = None

    @property
    def frames(self) -> list[int]:
        """Each item's number of log-mel frames."""
        return [len(mel) for mel in self.mels]


def _prenet_step(prenet, frame: torch.Tensor, speakers: torch.Tensor | None, position: int) -> torch.Tensor:
    """``SpeechT5SpeechDecoderPrenet`` on one (B, 1, mels) frame at ``position`` -> (B, 1, hidden).

    The consistent dropout draws one mask for the frame, shared by the batch, like the pre-net's.
    """
    p = prenet.config.speech_decoder_prenet_dropout
    x = frame
    for layer in prenet.layers:
        x = F.relu(layer(x))
        mask = torch.bernoulli(x[0], p=p)
        x = torch.where(mask == 1, x, 0) * (1 / (1 - p))
    x = prenet.final_layer(x)
    positions = prenet.encode_positions
    x = positions.dropout(x + positions.alpha * positions.pe[:, position : position + 1])
    if speakers is not None:
        spk = F.normalize(speakers).unsqueeze(1)
        x = F.relu(prenet.speaker_embeds_layer(torch.cat([x, spk], dim=-1)))
    return x


class DecoderCache:
    """SpeechT5's decoder layers stepped one frame at a time over key/value buffers.

    ``SpeechT5DecoderLayer``'s inference forward (dropouts are off in eval mode), written out so
    that the self-attention keys and values are written in place at their position instead of
    concatenated, and the cross-attention's keys, values and padding mask are prepared once.
    The buffers start at ``first`` steps and double when full (up to ``steps``), so memory follows
    the output actually generated, not the length limit (``maxlenratio`` 20 allows thousands of
    steps), and the copying stays linear in the length.
    """

    def __init__(
        self,
        decoder,
        hidden: torch.Tensor,
        enc_mask: torch.Tensor,
        steps: int,
        first: int = 128,
        record_cross: bool = False,
    ) -> None:
        self.layers = decoder.wrapped_decoder.layers
        # with record_cross, each step's cross-attention weights, (B, layers, heads, S) per step
        self.cross_weights: list[torch.Tensor] | None = [] if record_cross else None
        attn = self.layers[0].self_attn
        self.heads, self.head_dim = attn.num_heads, attn.head_dim
        batch, length, _ = hidden.shape
        self.steps = steps
        shape = (len(self.layers), batch, self.heads, min(first, steps), self.head_dim)
        self.keys, self.values = hidden.new_empty(shape), hidden.new_empty(shape)
        self.cross = [
            (self._split(layer.encoder_attn.k_proj(hidden)), self._split(layer.encoder_attn.v_proj(hidden)))
            for layer in self.layers
        ]
        # the additive padding mask of transformers' eager attention: 0 where real, dtype min where padded
        bias = torch.zeros(batch, 1, 1, length, dtype=hidden.dtype, device=hidden.device)
        bias.masked_fill_(enc_mask[:, None, None, :] == 0, torch.finfo(hidden.dtype).min)
        self.bias = bias

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, hidden) -> (B * heads, T, head_dim), as ``SpeechT5Attention`` lays out keys."""
        batch = x.shape[0]
        return (
            x.view(batch, -1, self.heads, self.head_dim)
            .transpose(1, 2)
            .reshape(batch * self.heads, -1, self.head_dim)
        )

    def _attend(self, attn, x, keys, values, bias=None, record=None) -> torch.Tensor:
        batch = x.shape[0]
        query = (attn.q_proj(x) * attn.scaling).view(batch * self.heads, 1, self.head_dim)
        weights = torch.bmm(query, keys.transpose(1, 2))
        if bias is not None:
            weights = (weights.view(batch, self.heads, 1, -1) + bias).view(batch * self.heads, 1, -1)
        probs = F.softmax(weights, dim=-1)
        if record is not None:
            record.append(probs.view(batch, self.heads, -1))
        out = torch.bmm(probs, values)
        return attn.out_proj(out.view(batch, 1, self.heads * self.head_dim))

    def _grow(self, capacity: int) -> None:
        done = self.keys.shape[3]
        shape = (*self.keys.shape[:3], capacity, self.head_dim)
        keys, values = self.keys.new_empty(shape), self.values.new_empty(shape)
        keys[:, :, :, :done] = self.keys
        values[:, :, :, :done] = self.values
        self.keys, self.values = keys, values

    def step(self, x: torch.Tensor, position: int) -> torch.Tensor:
        """(B, 1, hidden) pre-net output at ``position`` (0-based) -> (B, 1, hidden) decoder output."""
        batch, n = x.shape[0], position + 1
        if position >= self.keys.shape[3]:
            self._grow(min(2 * self.keys.shape[3], self.steps))
        record = [] if self.cross_weights is not None else None
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            self.keys[i, :, :, position] = attn.k_proj(x).view(batch, self.heads, self.head_dim)
            self.values[i, :, :, position] = attn.v_proj(x).view(batch, self.heads, self.head_dim)
            keys = self.keys[i, :, :, :n].reshape(batch * self.heads, n, self.head_dim)
            values = self.values[i, :, :, :n].reshape(batch * self.heads, n, self.head_dim)
            x = layer.self_attn_layer_norm(x + self._attend(attn, x, keys, values))
            keys, values = self.cross[i]
            x = layer.encoder_attn_layer_norm(
                x + self._attend(layer.encoder_attn, x, keys, values, self.bias, record)
            )
            x = layer.final_layer_norm(x + layer.feed_forward(x))
        if record is not None:
            self.cross_weights.append(torch.stack(record, dim=1))
        return x


def encode(model, input_values: torch.Tensor, attention_mask: torch.Tensor, separately: bool):
    """(B, T) padded audio -> encoder states (B, S, hidden), their (B, S) mask and the S_i."""
    encoder = model.speecht5.encoder
    if separately:
        lengths = [int(n) for n in attention_mask.sum(-1).tolist()]
        states = [
            encoder(
                input_values=input_values[i : i + 1, :n], attention_mask=attention_mask[i : i + 1, :n]
            ).last_hidden_state[0]
            for i, n in enumerate(lengths)
        ]
        enc_lens = [s.shape[0] for s in states]
        hidden = torch.nn.utils.rnn.pad_sequence(states, batch_first=True)
        positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
        mask = (positions < torch.tensor(enc_lens, device=hidden.device)[:, None]).long()
        return hidden, mask, enc_lens
    hidden = encoder(input_values=input_values, attention_mask=attention_mask).last_hidden_state
    mask = encoder.prenet._get_feature_vector_attention_mask(hidden.shape[1], attention_mask)
    return hidden, mask, [int(n) for n in mask.sum(-1).tolist()]


def step_limits(
    model, enc_lens: list[int], minlenratio: float, maxlenratio: float
) -> tuple[list[int], list[int]]:
    """Per item: the fewest decoder steps before a stop token counts, and the most steps.

    ``generate_speech``'s rule, per item: ``int(S_i * ratio / reduction_factor)``, at least one
    step, and never past the decoder's ``max_speech_positions``.
    """
    r, cap = model.config.reduction_factor, model.config.max_speech_positions
    maxlen = [min(max(1, int(n * maxlenratio / r)), cap) for n in enc_lens]
    minlen = [min(int(n * minlenratio / r), cap) for n in enc_lens]
    return minlen, maxlen


@torch.inference_mode()
def generate(
    model,
    input_values: torch.Tensor,
    attention_mask: torch.Tensor,
    speakers: torch.Tensor | None,
    *,
    threshold: float = 0.5,
    minlenratio: float = 0.0,
    maxlenratio: float = 20.0,
    encode_separately: bool = False,
    check_every: int = CHECK_EVERY,
    output_cross_attentions: bool = False,
) -> Generated:
    """Generate log-mels for a padded batch of 16 kHz audio.

    Args:
        model: ``SpeechT5ForSpeechToSpeech`` (eval mode).
        input_values: (B, T) audio, padded; attention_mask: (B, T) 1 on real samples.
        speakers: (B, 512) x-vectors (normalised here, as the pre-net does).
        threshold, minlenratio, maxlenratio: ``generate_speech``'s, per item (see the module doc).
        encode_separately: encode each input alone (exact and faster on a CPU).
        check_every: decoder steps between looks at the stop probabilities.
        output_cross_attentions: also return each item's cross-attention weights (validation
            pictures); costs memory linear in the steps.
    """
    if model.training:
        # DecoderCache writes out the layers' inference forward: in training mode transformers
        # would also apply attention and hidden dropout, so the two would silently differ
        raise ValueError("generate() runs the model in eval mode: call model.eval() first.")
    config = model.config
    r, bins = config.reduction_factor, config.num_mel_bins
    hidden, enc_mask, enc_lens = encode(model, input_values, attention_mask, encode_separately)
    minlen, maxlen = step_limits(model, enc_lens, minlenratio, maxlenratio)
    total = max(max(a, b) for a, b in zip(minlen, maxlen, strict=True))
    batch, device = hidden.shape[0], hidden.device
    spectra = hidden.new_empty(batch, total, r, bins)
    probs = hidden.new_empty(batch, total, dtype=torch.float32)
    step_no = torch.arange(1, total + 1, device=device)[None]
    # a step may stop an item once it is at least minlen; at maxlen it must
    may_stop = step_no >= torch.tensor(minlen, device=device)[:, None]
    must_stop = step_no >= torch.tensor(maxlen, device=device)[:, None]
    decoder, postnet = model.speecht5.decoder, model.speech_decoder_postnet
    frame = hidden.new_zeros(batch, 1, bins)
    cache = DecoderCache(decoder, hidden, enc_mask, total, record_cross=output_cross_attentions)
    steps = None
    for idx in range(1, total + 1):
        x = _prenet_step(decoder.prenet, frame, speakers, idx - 1)
        last = cache.step(x, idx - 1)[:, 0]
        spectrum = postnet.feat_out(last).view(batch, r, bins)
        spectra[:, idx - 1] = spectrum
        frame = spectrum[:, -1:]
        probs[:, idx - 1] = torch.sigmoid(postnet.prob_out(last)).sum(-1).float()
        if idx % check_every == 0 or idx == total:
            stop = may_stop[:, :idx] & ((probs[:, :idx] >= threshold) | must_stop[:, :idx])
            found = stop.any(-1)
            if bool(found.all()):
                steps = [int(k) + 1 for k in stop.int().argmax(-1).tolist()]
                break
    mels = [postnet.postnet(spectra[i : i + 1, :n].reshape(1, n * r, bins))[0] for i, n in enumerate(steps)]
    reasons = ["max_length" if n >= limit else "stop_token" for n, limit in zip(steps, maxlen, strict=True)]
    cross = None
    if output_cross_attentions:
        # (B, steps done, layers, heads, S) -> per item (layers, heads, its steps, its S)
        weights = torch.stack(cache.cross_weights, dim=1)
        cross = [weights[i, :n, :, :, : enc_lens[i]].permute(1, 2, 0, 3) for i, n in enumerate(steps)]
    return Generated(mels, reasons, cross)
