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
    "stop_token", or "max_length" when the item ran to its limit."""

    mels: list[torch.Tensor]
    stop_reasons: list[str]

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
) -> Generated:
    """Generate log-mels for a padded batch of 16 kHz audio.

    Args:
        model: ``SpeechT5ForSpeechToSpeech`` (eval mode).
        input_values: (B, T) audio, padded; attention_mask: (B, T) 1 on real samples.
        speakers: (B, 512) x-vectors (normalised here, as the pre-net does).
        threshold, minlenratio, maxlenratio: ``generate_speech``'s, per item (see the module doc).
        encode_separately: encode each input alone (exact and faster on a CPU).
        check_every: decoder steps between looks at the stop probabilities.
    """
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
    cache, steps = None, None
    for idx in range(1, total + 1):
        x = _prenet_step(decoder.prenet, frame, speakers, idx - 1)
        out = decoder.wrapped_decoder(
            hidden_states=x,
            encoder_hidden_states=hidden,
            encoder_attention_mask=enc_mask,
            cache=cache,
            use_cache=True,
            return_dict=True,
        )
        cache = out.cache
        last = out.last_hidden_state[:, 0]
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
    return Generated(mels, reasons)
