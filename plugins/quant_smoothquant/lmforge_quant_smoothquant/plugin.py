"""Registers the ``w8a8`` quantizer. Importing this module must stay cheap: no torch import."""

from __future__ import annotations

from lmforge import hookimpl


@hookimpl
def register_quantizers(register):
    from lmforge.registry import QuantizerSpec

    register(
        QuantizerSpec(
            name="w8a8",
            command="smooth_quant",
            format="W8A8 int8 or fp8 (LMDeploy's smooth_quant layout)",
            engines=("pytorch",),
            description="Quantize weights and activations to 8 bits (int8 or fp8) with "
            "SmoothQuant.",
            plugin="quant_smoothquant",
            cli="lmforge_quant_smoothquant.cli:smooth_quant",
        )
    )
