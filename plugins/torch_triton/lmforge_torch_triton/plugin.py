"""Registers the ``pytorch`` engine. Importing this module must stay cheap: no torch import."""

from __future__ import annotations

from lmforge import hookimpl
from lmforge.registry import EngineCapabilities

CAPABILITIES = EngineCapabilities(
    # Every architecture that maps onto the canonical Llama-family decoder.
    architectures=(
        "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "InternLM2ForCausalLM",
    ),
    devices=("cuda", "cpu"),
    # K/V cache int8 and int4, quantized per token and head as it is written (kv_cache.py).
    kv_quant_policies=(0, 4, 8),
    weight_formats=("safetensors", "bin", "gguf", "dummy"),
)


def is_supported(model_info, engine_config) -> tuple[bool, str]:
    """What the capabilities cannot say: the decoder's activation."""
    act = model_info.config.hidden_act
    if act != "silu":
        return False, f"the pytorch engine does not implement the {act} activation"
    return True, ""


@hookimpl
def register_engines(register):
    from lmforge.registry import EngineSpec

    register(
        EngineSpec(
            name="pytorch",
            runner="lmforge_torch_triton.runner:TorchModelRunner",
            config_class="lmforge.messages:PytorchEngineConfig",
            capabilities=CAPABILITIES,
            description="PyTorch with Triton kernels on CUDA GPUs; pure PyTorch on the CPU.",
            is_supported=is_supported,
            plugin="torch_triton",
        )
    )
