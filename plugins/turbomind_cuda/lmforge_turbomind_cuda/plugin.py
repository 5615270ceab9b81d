"""Registers the ``turbomind`` engine and ``lmforge convert``. Importing this module must stay
cheap: no torch, no library load."""

from __future__ import annotations

from lmforge import hookimpl
from lmforge.registry import EngineCapabilities

CAPABILITIES = EngineCapabilities(
    architectures=(
        "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "InternLM2ForCausalLM",
    ),
    devices=("cuda",),
    dtypes=("float16", "bfloat16"),
    tp=(1,),
    kv_quant_policies=(0,),
    weight_formats=("safetensors", "bin", "gguf", "dummy", "turbomind"),
    model_formats=("hf",),
)
HEAD_DIMS = (64, 128)


def is_supported(model_info, engine_config) -> tuple[bool, str]:
    """What the capabilities cannot say: the shapes and features the kernels implement."""
    c = model_info.config
    if c.hidden_act != "silu":
        return False, f"the kernels implement the silu activation, not {c.hidden_act}"
    if c.head_dim not in HEAD_DIMS:
        return False, f"the attention kernels take head_dim 64 or 128, not {c.head_dim}"
    if c.hidden_size % 8 or c.intermediate_size % 8:
        return False, "hidden and intermediate sizes must be multiples of 8"
    if c.o_bias or c.mlp_bias:
        return False, "biases on the output or MLP projections are not implemented"
    if c.rope.scaling_type == "dynamic":
        return False, "dynamic NTK rope scaling (rope_scaling_factor) is not implemented"
    return True, ""


@hookimpl
def register_engines(register):
    from lmforge.registry import EngineSpec

    register(
        EngineSpec(
            name="turbomind",
            runner="lmforge_turbomind_cuda.runner:TurbomindRunner",
            config_class="lmforge.messages:TurbomindEngineConfig",
            capabilities=CAPABILITIES,
            description="Hand-written CUDA kernels, one native call per step (CUDA GPUs).",
            is_supported=is_supported,
            plugin="turbomind_cuda",
        )
    )


@hookimpl
def register_commands(app):
    from lmforge.cli.command import LmforgeCommand

    from .convert_cli import convert

    app.command("convert", cls=LmforgeCommand)(convert)


@hookimpl
def register_env_info(register):
    from .library import describe_build

    register("turbomind library", describe_build())
