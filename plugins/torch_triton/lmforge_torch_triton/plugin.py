"""Registers the ``pytorch`` engine. Importing this module must stay cheap: no torch import."""

from __future__ import annotations

from lmforge import hookimpl
from lmforge.registry import EngineCapabilities

# The gated MLP activations the decoder implements (ModelConfig.hidden_act).
ACTIVATIONS = ("silu", "gelu_tanh")

CAPABILITIES = EngineCapabilities(
    # Every built-in architecture: all map onto the canonical decoder config.
    architectures=(
        "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "InternLM2ForCausalLM",
        "Qwen3ForCausalLM", "Qwen3MoeForCausalLM", "MixtralForCausalLM", "Gemma2ForCausalLM",
        "Gemma3ForCausalLM", "Phi3ForCausalLM",
    ),
    devices=("cuda", "cpu"),
    # Tensor parallelism: one process per GPU (or per CPU process); 3 and 6 suit models whose
    # head counts are multiples of 3.
    tp=(1, 2, 3, 4, 6, 8),
    # K/V cache int8 and int4, quantized per token and head as it is written (kv_cache.py).
    kv_quant_policies=(0, 4, 8),
    weight_formats=("safetensors", "bin", "gguf", "dummy"),
    quant_methods=("awq", "w8a8"),
)


def is_supported(model_info, engine_config) -> tuple[bool, str]:
    """What the capabilities cannot say: the decoder's activation, quantized experts, a model
    plugin's layers under tensor parallelism, and whether ``tp`` divides the model's heads and
    fits the visible GPUs."""
    config = model_info.config
    if config.hidden_act not in ACTIVATIONS:
        return False, (f"the pytorch engine does not implement the {config.hidden_act} "
                       f"activation (it has {', '.join(ACTIVATIONS)})")
    if config.moe is not None and model_info.quant is not None:
        return False, (f"its experts would be {model_info.quant.describe()}; the pytorch engine "
                       "runs mixture-of-experts models in 16- or 32-bit floating point only")
    tp = getattr(engine_config, "tp", 1)
    if tp > 1 and config.architecture not in CAPABILITIES.architectures:
        from .models.pieces import pieces_for

        pieces = pieces_for(config.architecture)
        if pieces is not None and not pieces.tensor_parallel:
            return False, (f"the {config.architecture} layers its model plugin brings do not "
                           "support tensor parallelism; use tp=1")
    if tp > 1:
        from .parallel.plan import unsupported_reason

        quant = model_info.quant
        group = quant.group_size if quant is not None and quant.method == "awq" else None
        reason = unsupported_reason(model_info.config, tp, group) or _gpus_missing(
            tp, getattr(engine_config, "device", "auto"))
        if reason:
            return False, reason
    return True, ""


def _gpus_missing(tp: int, device: str) -> str:
    """Why ``tp`` ranks do not fit ``device`` ("" when they do): each rank takes one GPU."""
    import torch

    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return ""
    if ":" in device:
        return (f"device={device} names one GPU but tp={tp} uses GPUs 0 to {tp - 1}; pass "
                "device=cuda and choose the GPUs with CUDA_VISIBLE_DEVICES")
    visible = torch.cuda.device_count()
    if tp > visible:
        return (f"tp={tp} needs {tp} GPUs but {visible} {'is' if visible == 1 else 'are'} "
                "visible; lower tp or make more GPUs visible (CUDA_VISIBLE_DEVICES)")
    return ""


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
