"""SpeechT5 spectrogram loss for voice conversion, with each part returned separately.

``SpeechT5ForSpeechToSpeech.forward`` computes no loss, so training runs the decoder and
post-net itself and scores them here. The math is that of transformers'
``SpeechT5SpectrogramLoss`` (used by the TTS model): L1 before and after the post-net on
non-padded frames, BCE on the stop token (``pos_weight`` 5), and a guided-attention loss on
the first heads of every decoder layer's cross-attention (Tachibana et al. 2017).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def guided_attention_weights(
    input_lengths: torch.Tensor, output_lengths: torch.Tensor, t_in: int, t_out: int, sigma: float
) -> torch.Tensor:
    """(B,) encoder and decoder lengths -> (B, t_out, t_in) penalty ``1 - exp(-(n/N - t/T)^2 / 2 sigma^2)``.

    Entries outside each item's lengths are 0.
    """
    device = input_lengths.device
    n = torch.arange(t_in, device=device).float()[None, None, :] / input_lengths[:, None, None].clamp(min=1)
    t = torch.arange(t_out, device=device).float()[None, :, None] / output_lengths[:, None, None].clamp(min=1)
    w = 1.0 - torch.exp(-((n - t) ** 2) / (2 * sigma**2))
    inside = (torch.arange(t_in, device=device)[None, None, :] < input_lengths[:, None, None]) & (
        torch.arange(t_out, device=device)[None, :, None] < output_lengths[:, None, None]
    )
    return w * inside


class SpectrogramLoss(nn.Module):
    """L1 + L1 + BCE(stop) + guided attention.

    The defaults are the VC fine-tune's (see ``vc.model.module.DEFAULT_LOSS`` for their sources).

    Args:
        reduction_factor: frames the decoder emits per step (SpeechT5: 2).
        bce_pos_weight: weight of the positive (stop) class in the BCE.
        attn_weight: scale of the guided-attention loss (transformers' ``guided_attention_loss_scale``,
            fairseq's ``guided_attn_loss_lambda``); 0 turns it off.
        attn_sigma: width of the diagonal band.
        attn_heads: how many leading heads of each decoder layer are guided.
    """

    def __init__(
        self,
        reduction_factor: int = 2,
        bce_pos_weight: float = 5.0,
        attn_weight: float = 1.0,
        attn_sigma: float = 0.4,
        attn_heads: int = 2,
    ):
        super().__init__()
        self.reduction_factor = reduction_factor
        self.attn_weight = attn_weight
        self.attn_sigma = attn_sigma
        self.attn_heads = attn_heads
        self.register_buffer("pos_weight", torch.tensor(float(bce_pos_weight)), persistent=False)

    def forward(
        self,
        before: torch.Tensor,
        after: torch.Tensor,
        logits: torch.Tensor,
        labels: torch.Tensor,
        encoder_mask: torch.Tensor | None = None,
        cross_attentions: tuple[torch.Tensor, ...] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Score one batch.

        Args:
            before, after: (B, T, M) mel predicted before / after the post-net.
            logits: (B, T) stop-token logits.
            labels: (B, T, M) target log-mel, padded frames filled with -100.
            encoder_mask: (B, S) encoder attention mask (after the speech pre-net's downsampling).
            cross_attentions: per decoder layer, (B, heads, T / reduction_factor, S).

        Returns:
            ``{"l1", "bce", "attn", "loss"}`` scalars; ``loss`` is their sum.
        """
        # Masked means as sums over a 0/1 mask, not masked_select: the same numbers without a
        # host-device sync per term (masked_select must learn its output size from the GPU).
        padding_mask = labels != -100.0
        mask = padding_mask.float()
        count = mask.sum().clamp(min=1)
        target = labels.float()
        l1 = (
            ((after.float() - target).abs() * mask).sum() + ((before.float() - target).abs() * mask).sum()
        ) / count

        frames = padding_mask[:, :, 0]
        frame_mask = frames.float()
        # stop label is 1 on the last real frame of each item
        stop = torch.cat([~frames, torch.ones_like(frames[:, :1])], dim=1)[:, 1:].float()
        bce_all = F.binary_cross_entropy_with_logits(
            logits.float(), stop, pos_weight=self.pos_weight, reduction="none"
        )
        bce = (bce_all * frame_mask).sum() / frame_mask.sum().clamp(min=1)

        attn = torch.zeros((), device=labels.device)
        # LayerDrop can skip every decoder layer of a small model: then there is nothing to guide
        layers = [x for x in (cross_attentions or ()) if x is not None]
        if self.attn_weight > 0 and layers and encoder_mask is not None:
            weights = torch.cat([x[:, : self.attn_heads] for x in layers], dim=1).float()
            out_mask = (
                frames[:, self.reduction_factor - 1 :: self.reduction_factor]
                if self.reduction_factor > 1
                else frames
            )
            in_mask = encoder_mask.bool()
            guide = guided_attention_weights(
                in_mask.sum(-1), out_mask.sum(-1), weights.shape[-1], weights.shape[-2], self.attn_sigma
            )
            inside = (out_mask.unsqueeze(-1) & in_mask.unsqueeze(-2)).unsqueeze(1).float()
            penalty = (guide.unsqueeze(1) * weights * inside).sum()
            attn = self.attn_weight * penalty / (inside.sum() * weights.shape[1]).clamp(min=1)

        return {"l1": l1, "bce": bce, "attn": attn, "loss": l1 + bce + attn}
