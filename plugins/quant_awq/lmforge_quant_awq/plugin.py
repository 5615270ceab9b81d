"""Registers the ``awq`` quantizer. Importing this module must stay cheap: no torch import."""

from __future__ import annotations

from lmforge import hookimpl


@hookimpl
def register_quantizers(register):
    from lmforge.registry import QuantizerSpec

    register(
        QuantizerSpec(
            name="awq",
            command="auto_awq",
            format="AWQ W4A16 (AutoAWQ GEMM layout)",
            engines=("pytorch",),
            description="Quantize weights to 4 bits with AWQ (activation-aware scales).",
            plugin="quant_awq",
            cli="lmforge_quant_awq.cli:auto_awq",
        )
    )
