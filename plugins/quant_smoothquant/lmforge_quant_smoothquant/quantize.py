"""``lmforge lite smooth_quant``: W8A8 with SmoothQuant, in LMDeploy's smooth_quant layout.

Smoothing moves activation outliers into the weights: for each group of linears that share an
input (:mod:`lmforge.lite.groups`), ``s = max|X|^α / max|W|^(1-α)`` per input channel (``α =
0.5``; ``max|W|`` over the group's weights), normalized to ``sqrt(max(s) * min(s)) = 1``, is
folded into the preceding RMSNorm (q/k/v, gate/up) or linear (v -> o without grouped K/V heads,
up -> down). ``--search-scale`` instead tries ``α`` on a grid of 20 (and no smoothing) per group
on the real activations, with weights and activations quantized as the engine runs them.
Then every linear's weight is quantized per output channel. ``--calib-samples 0``: no smoothing.

Output, as LMDeploy's ``lmdeploy lite smooth_quant`` writes it (``QLinear``/``QRMSNorm``
state saved with ``save_pretrained``): each linear's ``weight`` is int8 or float8_e4m3fn
``[out, in]`` with ``scale`` float32 ``[out, 1]`` (``w ≈ weight * scale``) and its ``bias``, if
any, in the model dtype; norms (smoothing folded in), embeddings and ``lm_head`` stay in the
model dtype. ``config.json`` gets ``quantization_config = {"quant_method": "smooth_quant",
"quant_dtype": "int8" | "float8_e4m3fn"}``, plus the granularity lmforge records:
``"weight_granularity": "per_channel"``, ``"activation_granularity": "per_token"``,
``"activation_scheme": "dynamic"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from lmforge.errors import ConfigError
from lmforge.lite.calibrate import calibration_meta, layer_stats
from lmforge.lite.decoder import LINEARS, LayerWeights
from lmforge.lite.groups import INPUT_OF, ScaleGroup, fold_scales, scale_groups
from lmforge.lite.host_model import HostModel
from lmforge.lite.layerwise import LayerwiseRunner
from lmforge.lite.options import (
    CalibOptions,
    compute_dtype,
    load_samples,
    open_model,
    resolve_device,
)
from lmforge.lite.progress import LayerProgress
from lmforge.lite.search import scaled_projector, search_scales
from lmforge.lite.stats import Calibration
from lmforge.lite.workdir import check_new_work_dir, reusable_calibration
from lmforge.lite.writer import CheckpointWriter, output_config

from .w8 import (
    DTYPE_NAMES,
    QUANT_DTYPES,
    fake_quantize_tokens,
    fake_quantize_weight,
    quantize_weight,
)

ALPHA = 0.5
N_GRID = 20
_FP8_CAPABILITY = (8, 9)


@dataclass
class SmoothQuantOptions:
    """``--quant-dtype`` (``int8`` or ``fp8``), ``--search-scale`` and the migration strength."""

    quant_dtype: str = "int8"
    search_scale: bool = False
    alpha: float = ALPHA

    @property
    def dtype(self) -> torch.dtype:
        return QUANT_DTYPES[self.quant_dtype]


def check_device(options: SmoothQuantOptions, device: torch.device) -> None:
    """fp8 runs on fp8 tensor cores; refuse it on a GPU without them."""
    if options.quant_dtype != "fp8" or device.type != "cuda":
        return
    capability = torch.cuda.get_device_capability(device)
    if capability < _FP8_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        raise ConfigError(
            f"--quant-dtype fp8 needs a GPU with fp8 tensor cores (compute capability 8.9 or "
            f"newer: Ada, Hopper, Blackwell) and {name} is {capability[0]}.{capability[1]}; use "
            "--quant-dtype int8."
        )


def quantization_config(options: SmoothQuantOptions) -> dict:
    return {"quant_method": "smooth_quant", "quant_dtype": DTYPE_NAMES[options.quant_dtype],
            "weight_granularity": "per_channel", "activation_granularity": "per_token",
            "activation_scheme": "dynamic"}


def smoothing_scales(x_max: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """SmoothQuant's ``s = max|X|^α / max|W|^(1-α)`` per input channel, normalized."""
    w_max = torch.cat([w.abs().amax(dim=0, keepdim=True).float() for w in weights])
    w_max = w_max.amax(dim=0).clamp(min=1e-5)
    s = (x_max.float().clamp(min=1e-5).pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def smooth_quant(model_path: str | Path, work_dir: str | Path, calib: CalibOptions,
                 options: SmoothQuantOptions) -> Path:
    """Smooth and quantize ``model_path`` and write the W8A8 folder ``work_dir``."""
    work_dir = Path(work_dir)
    calib.check()
    info = open_model(model_path)
    device = resolve_device(calib.device)
    check_device(options, device)
    reused = None
    if calib.samples:
        reused = reusable_calibration(work_dir, calibration_meta(info, calib))
    else:
        check_new_work_dir(work_dir)
    dtype = compute_dtype(info, device)
    # The statistics of a reused calibration are all plain smoothing needs.
    run_text = calib.samples > 0 and (options.search_scale or reused is None)
    samples = load_samples(info, calib) if run_text else None
    out_dtype = {"bfloat16": torch.bfloat16, "float32": torch.float16}.get(
        info.config.torch_dtype, torch.float16)
    with torch.inference_mode(), CheckpointWriter(work_dir, info) as writer:
        writer.check([f"layers.0.{n}.scale" for n in LINEARS] + ["layers.0.input_norm"])
        model = HostModel.load(info)
        for name, tensor in model.globals.items():
            writer.add(name, tensor.to(out_dtype))
        runner = LayerwiseRunner(model, samples, device, dtype, calib.batch_size) \
            if samples is not None else None
        smoother = _Smoother(info.config, options, runner, reused, calib.samples > 0)
        with LayerProgress("SmoothQuant", info.config.num_layers) as progress:
            for i in range(info.config.num_layers):
                layer = runner.layer(i) if runner else model.layer(i, device, dtype)
                summary = smoother.smooth(i, layer, progress)
                progress.step(f"layer {i + 1}: quantizing")
                for name, tensor in _quantized(layer, options.dtype, out_dtype).items():
                    writer.add(f"layers.{i}.{name}", tensor)
                model.release(i)
                progress.layer_done(i, summary)
        return writer.finish(
            output_config(info, quantization_config(options), str(out_dtype).split(".")[-1])
        )


class _Smoother:
    def __init__(self, config, options: SmoothQuantOptions, runner: LayerwiseRunner | None,
                 reused: Calibration | None, enabled: bool) -> None:
        self.config, self.options, self.runner = config, options, runner
        self.reused, self.enabled = reused, enabled
        self.fake_w = partial(fake_quantize_weight, dtype=options.dtype)
        self.fake_x = partial(fake_quantize_tokens, dtype=options.dtype)

    def smooth(self, index: int, layer: LayerWeights, progress: LayerProgress) -> str:
        """Fold the layer's smoothing scales in place; the layer's line for the progress."""
        if not self.enabled:
            return "no smoothing"
        outputs = None
        if self.runner is not None:
            progress.step(f"layer {index + 1}: calibration pass")
            stats, outputs = layer_stats(self.runner, layer)
        notes = []
        for group in scale_groups(self.config):
            if self.reused is not None:
                first = next(n for n, g in INPUT_OF.items() if g == group.name)
                x_max = self.reused.absmax[f"layers.{index}.{first}"].to(layer["input_norm"].device)
            else:
                x_max = stats[group.name].absmax
            progress.step(f"layer {index + 1}: smoothing {group.name}")
            scales, note = self._scales(layer, group, x_max)
            fold_scales(layer, group, scales)
            notes.append(note)
        if outputs is not None:
            self.runner.advance(outputs)
        return ", ".join(notes)

    def _scales(self, layer: LayerWeights, group: ScaleGroup,
                x_max: torch.Tensor) -> tuple[torch.Tensor, str]:
        weights = [layer[f"{n}.weight"] for n in group.linears]
        if not self.options.search_scale:
            return smoothing_scales(x_max, weights, self.options.alpha), f"{group.name} α=0.50"
        alphas = [None] + [i / N_GRID for i in range(N_GRID)]
        candidates = [torch.ones_like(x_max, dtype=torch.float32) if a is None
                      else smoothing_scales(x_max, weights, a) for a in alphas]
        best, losses = search_scales(
            self.runner, layer, group, candidates,
            lambda s: scaled_projector(layer, group, s, self.fake_w, self.fake_x),
        )
        gain = 1 - losses[best] / losses[0] if losses[0] > 0 else 0.0
        label = "none" if alphas[best] is None else f"{alphas[best]:.2f}"
        return candidates[best].to(x_max.device), f"{group.name} α={label} ({gain:.0%} less error)"


def _quantized(layer: LayerWeights, dtype: torch.dtype,
               out_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, tensor in layer.items():
        linear = name.rsplit(".", 1)[0]
        if name.endswith(".weight") and linear in LINEARS:
            out[name], out[f"{linear}.scale"] = quantize_weight(tensor, dtype)
        else:  # norms and biases
            out[name] = tensor.to(out_dtype)
    return out
