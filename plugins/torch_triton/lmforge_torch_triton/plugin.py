"""Registers the ``pytorch`` engine. Importing this module must stay cheap: no torch import."""

from __future__ import annotations

from lmforge import hookimpl

SUPPORTED_FORMATS = ("safetensors", "bin", "gguf", "dummy")


def is_supported(model_info, device: str) -> tuple[bool, str]:
    """Whether the ``pytorch`` engine can run ``model_info`` on ``device``."""
    from lmforge.registry import models

    architecture = model_info.config.architecture
    spec = models().get(architecture)
    if spec is None or "pytorch" not in spec.engines:
        return False, f"the pytorch engine does not implement {architecture}"
    if model_info.format not in SUPPORTED_FORMATS:
        return False, f"the pytorch engine cannot read {model_info.format} weights"
    if model_info.config.hidden_act != "silu":
        return (
            False,
            f"the pytorch engine does not implement the {model_info.config.hidden_act} activation",
        )
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        return False, f"the pytorch engine runs on CUDA GPUs and the CPU, not {device}"
    return True, ""


@hookimpl
def register_engines(register):
    from lmforge.registry import EngineSpec

    register(
        EngineSpec(
            name="pytorch",
            runner="lmforge_torch_triton.runner:TorchModelRunner",
            config_class="lmforge.messages:PytorchEngineConfig",
            description="PyTorch with Triton kernels on CUDA GPUs; pure PyTorch on the CPU.",
            is_supported=is_supported,
            plugin="torch_triton",
        )
    )
