"""The hook implementation lmforge calls (named by this distribution's entry point).

Only cheap imports here: lmforge imports this module every time its CLI starts. The adapter and
the decoder pieces are lazy ``"module:NAME"`` references, imported when a model loads.
"""

from __future__ import annotations

from lmforge import hookimpl


@hookimpl
def register_models(register):
    from lmforge.registry import ModelSpec

    register(ModelSpec(
        architecture="Olmo2ForCausalLM",
        adapter="lmforge_example_model.adapter:Olmo2Adapter",
        # The pytorch engine runs it with the layers this plugin brings.
        engines=("pytorch",),
        decoders={"pytorch": "lmforge_example_model.torch_decoder:PIECES"},
        description="OLMo 2 (norms on the attention and MLP outputs, q/k norms)",
    ))
