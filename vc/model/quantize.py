"""Half-precision weights for the decoder on a CPU (``quantize=fp16`` of the converter).

Generation runs SpeechT5's six decoder layers once per output step on a handful of rows (the
batch), so each step multiplies a few rows by all 50M decoder weights. On a CPU that product is
bound by reading the weights, and fp32 matrix kernels are poor at so few rows: 8 rows took twice
as long as 1. :class:`HalfWeightLinear` keeps a Linear layer's weights in fp16 in fbgemm's packed
layout and computes in fp32 (``torch.ops.quantized.linear_dynamic_fp16``, what torch's fp16
dynamic quantisation runs): half the bytes to read and a kernel made for few rows, 2.5x faster
for the decoder's layers at 8 rows. The result equals an fp32 layer whose weights were rounded to
fp16 (to about 5e-7); the converted log-mels move by about 5e-4 relative.

Only the decoder is converted: the encoder and the vocoder run on hundreds of frames at once,
where fp32 kernels are fast already (fp16 weights gained 1.1x there). On a GPU use ``dtype=bf16``.
"""

from __future__ import annotations

import torch
from torch import nn

from vc.errors import ConfigError

QUANTIZE = ("auto", "none", "fp16")


def fp16_weights_supported() -> bool:
    """Whether this torch has the fbgemm fp16 kernels (x86 CPUs)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


class HalfWeightLinear(nn.Module):
    """An inference-only ``nn.Linear`` with fp16 weights; inputs, outputs and sums stay fp32."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float().cpu()
        bias = None if linear.bias is None else linear.bias.detach().float().cpu()
        self._packed = torch.ops.quantized.linear_prepack_fp16(weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x, self._packed)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weights=fp16"


def half_weights(module: nn.Module) -> int:
    """Replace every ``nn.Linear`` under ``module`` by a :class:`HalfWeightLinear`, in place.

    Returns how many were replaced. The module must be on the CPU.
    """
    replaced = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, HalfWeightLinear(child))
            replaced += 1
        else:
            replaced += half_weights(child)
    return replaced


def resolve_quantize(name: str, device: torch.device, dtype: torch.dtype) -> bool:
    """``quantize`` setting -> whether the decoder gets fp16 weights.

    ``auto``: yes on a CPU in fp32 where fbgemm is available (x86), else no. ``none``: no.
    ``fp16``: yes, or a :class:`ConfigError` where it cannot run.
    """
    if name not in QUANTIZE:
        raise ConfigError(f"quantize={name!r}: use auto, none or fp16.")
    usable = device.type == "cpu" and dtype == torch.float32 and fp16_weights_supported()
    if name == "auto":
        return usable
    if name == "none":
        return False
    if device.type != "cpu":
        raise ConfigError(
            f"quantize=fp16 runs on the CPU only (device is {device.type}). "
            "On a GPU use dtype=bf16, or set quantize=none."
        )
    if dtype != torch.float32:
        raise ConfigError(
            f"quantize=fp16 computes in fp32: set dtype=fp32 (not {str(dtype).removeprefix('torch.')})."
        )
    if not fp16_weights_supported():
        raise ConfigError(
            "quantize=fp16 needs torch's fbgemm kernels (x86 CPUs); this torch has "
            f"{', '.join(torch.backends.quantized.supported_engines)}. Set quantize=none."
        )
    return True
