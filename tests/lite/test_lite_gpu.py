"""`lmforge lite` with --device cuda: the layers run on the GPU and the folders match the CPU's
(AWQ's up to the searches' discrete choices)."""

from __future__ import annotations

import pytest
import torch
from lmforge.lite.options import CalibOptions
from lmforge.model.linear import AWQLinear
from safetensors.torch import load_file

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)


def _options(calib_file, device):
    return CalibOptions(dataset=str(calib_file), samples=8, seqlen=32, batch_size=2, device=device)


def test_auto_awq_on_cuda_matches_the_cpu(outlier_model, calib_file, tmp_path):
    from lmforge_quant_awq.quantize import AwqOptions, auto_awq

    folder, _ = outlier_model
    outs = {d: auto_awq(folder, tmp_path / d, _options(calib_file, d), AwqOptions(w_group_size=32))
            for d in ("cpu", "cuda")}
    cpu, cuda = (load_file(outs[d] / "model.safetensors") for d in ("cpu", "cuda"))
    assert cpu.keys() == cuda.keys()
    # The scale and clipping searches are discrete choices over float sums, whose order differs
    # between devices: a group may pick a neighbouring candidate. The dequantized weights agree.
    for name in (n.removesuffix(".qweight") for n in cpu if n.endswith(".qweight")):
        a, b = (AWQLinear(t[f"{name}.qweight"], t[f"{name}.qzeros"], t[f"{name}.scales"], 32)
                .dequantize() for t in (cpu, cuda))
        assert (a - b).norm() / a.norm() < 0.1, name
    for name in cpu:
        if not name.endswith((".qweight", ".qzeros", ".scales")):
            torch.testing.assert_close(cpu[name].float(), cuda[name].float(), rtol=2e-2,
                                       atol=2e-3)


def _assert_same_folder(a, b):
    cpu, cuda = (load_file(folder / "model.safetensors") for folder in (a, b))
    assert cpu.keys() == cuda.keys()
    for name in cpu:
        if cpu[name].dtype in (torch.int32, torch.int8, torch.float8_e4m3fn):
            # Packed or 8-bit values: a rounding flip here and there between devices.
            assert (cpu[name] == cuda[name]).float().mean() > 0.95, name
        else:
            torch.testing.assert_close(cpu[name].float(), cuda[name].float(), rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("quant_dtype", ["int8", "fp8"])
def test_smooth_quant_on_cuda_matches_the_cpu(outlier_model, calib_file, tmp_path, quant_dtype):
    from lmforge_quant_smoothquant.quantize import SmoothQuantOptions, smooth_quant

    if quant_dtype == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    folder, _ = outlier_model
    options = SmoothQuantOptions(quant_dtype=quant_dtype)
    outs = {d: smooth_quant(folder, tmp_path / d, _options(calib_file, d), options)
            for d in ("cpu", "cuda")}
    _assert_same_folder(outs["cpu"], outs["cuda"])
