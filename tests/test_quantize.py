"""fp16 decoder weights on the CPU (vc.model.quantize, the converter's ``quantize`` setting)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vc.converter import VoiceConverter
from vc.errors import ConfigError
from vc.model.pretrained import load_speecht5
from vc.model.quantize import HalfWeightLinear, fp16_weights_supported, half_weights, resolve_quantize

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not fp16_weights_supported(), reason="needs torch's fbgemm kernels (x86)"),
]
CPU, FP32 = torch.device("cpu"), torch.float32
RUNAWAY = {"threshold": 3.0}


@pytest.mark.parametrize("bias", [True, False])
def test_half_weight_linear_is_a_linear_with_fp16_rounded_weights(bias):
    torch.manual_seed(0)
    linear = nn.Linear(96, 40, bias=bias)
    x = torch.randn(3, 5, 96)
    half = HalfWeightLinear(linear)
    rounded = nn.functional.linear(x, linear.weight.half().float(), linear.bias)
    out = half(x)
    assert out.shape == (3, 5, 40) and out.dtype == torch.float32
    torch.testing.assert_close(out, rounded, rtol=1e-5, atol=1e-5)
    # and it is not the fp32 layer itself: the rounding is there
    assert not torch.equal(out, linear(x))
    assert "weights=fp16" in repr(half)


def test_half_weights_converts_the_decoder_only(tiny_models):
    model = load_speecht5(str(tiny_models.speecht5)).eval()
    decoder_linears = sum(isinstance(m, nn.Linear) for m in model.speecht5.decoder.modules())
    encoder_before = sum(isinstance(m, nn.Linear) for m in model.speecht5.encoder.modules())
    assert half_weights(model.speecht5.decoder) == decoder_linears > 0
    assert not any(isinstance(m, nn.Linear) for m in model.speecht5.decoder.modules())
    assert sum(isinstance(m, HalfWeightLinear) for m in model.speecht5.decoder.modules()) == decoder_linears
    assert sum(isinstance(m, nn.Linear) for m in model.speecht5.encoder.modules()) == encoder_before


def test_resolve_quantize_auto_none_and_errors():
    assert resolve_quantize("auto", CPU, FP32) is True
    assert resolve_quantize("auto", CPU, torch.bfloat16) is False
    assert resolve_quantize("auto", torch.device("cuda"), FP32) is False
    assert resolve_quantize("none", CPU, FP32) is False
    assert resolve_quantize("fp16", CPU, FP32) is True
    with pytest.raises(ConfigError, match=r"quantize='int4': use auto, none or fp16"):
        resolve_quantize("int4", CPU, FP32)
    with pytest.raises(ConfigError, match=r"quantize=fp16 runs on the CPU only .*use dtype=bf16"):
        resolve_quantize("fp16", torch.device("cuda"), FP32)
    with pytest.raises(ConfigError, match=r"quantize=fp16 computes in fp32: set dtype=fp32 \(not bfloat16\)"):
        resolve_quantize("fp16", CPU, torch.bfloat16)


def test_converter_output_moves_little(tiny_bundle):
    """fp16 decoder weights against the fp32 model: the same frames, waveforms within 1% (the
    tiny random model; full-size MCD figures are in docs/benchmarks.md)."""
    exact = VoiceConverter.from_pretrained(tiny_bundle, device="cpu", quantize="none", generation=RUNAWAY)
    half = VoiceConverter.from_pretrained(tiny_bundle, device="cpu", generation=RUNAWAY)
    assert half.quantized and not exact.quantized
    assert any(isinstance(m, HalfWeightLinear) for m in half.model.modules())
    assert not any(isinstance(m, HalfWeightLinear) for m in exact.model.modules())
    rng = np.random.default_rng(0)
    srcs = [(0.2 * rng.standard_normal(int(s * 16_000))).astype(np.float32) for s in (1.2, 2.3)]
    for a, b in zip(exact.convert_many(srcs), half.convert_many(srcs), strict=True):
        assert a.meta["frames"] == b.meta["frames"] and len(a.wav) == len(b.wav)
        diff = np.linalg.norm(a.wav - b.wav) / np.linalg.norm(a.wav)
        print(f"relative L2 difference {diff:.2e}")
        assert 0 < diff < 1e-2


def test_converter_rejects_quantize_where_it_cannot_run(tiny_bundle):
    with pytest.raises(ConfigError, match="quantize=fp16 computes in fp32"):
        VoiceConverter.from_pretrained(tiny_bundle, device="cpu", dtype="bf16", quantize="fp16")
    with pytest.raises(ConfigError, match="quantize='yes'"):
        VoiceConverter.from_pretrained(tiny_bundle, device="cpu", quantize="yes")
