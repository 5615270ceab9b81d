"""``lmforge lite auto_awq``: AWQ W4A16, layer by layer, into an AutoAWQ-layout HF folder.

Per layer, on the chosen device: one float pass over the calibration samples gives each group's
input statistics, a sample of input rows and the layer's output (the next layer's input, so
every layer is calibrated on the float model's activations, as AutoAWQ does). Then, group by
group (:mod:`lmforge.lite.groups`), the best scales are searched and folded into the preceding
norm or linear; the clipping bounds are searched on the scaled inputs; last, each linear is
quantized and packed and the layer is written out and dropped from host memory.
``--calib-samples 0`` skips calibration: plain round-to-nearest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from lmforge.errors import ConfigError
from lmforge.lite.calibrate import calibration_meta, layer_stats
from lmforge.lite.decoder import LINEARS, LayerWeights
from lmforge.lite.groups import INPUT_OF, fold_scales, scale_groups
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
from lmforge.lite.stats import Calibration, ChannelStats
from lmforge.lite.workdir import check_new_work_dir, reusable_calibration
from lmforge.lite.writer import CheckpointWriter, output_config
from lmforge.model.config import ModelConfig

from .int4 import BITS, fake_quantize, quantize_linear
from .search import (
    CLIP_SKIP,
    N_GRID,
    apply_clip,
    scale_candidates,
    search_clip,
    weight_mean,
)

CLIP_TOKENS = 512
_USUAL_GROUP_SIZES = (32, 64, 128, 256)


@dataclass
class AwqOptions:
    """The weight flags: ``--w-bits``, ``--w-sym``, ``--w-group-size``, ``--search-scale``."""

    w_bits: int = BITS
    w_sym: bool = False
    w_group_size: int = 128
    search_scale: bool = True

    @property
    def zero_point(self) -> bool:
        return not self.w_sym


def linear_shapes(config: ModelConfig) -> dict[str, tuple[int, int]]:
    """``(out, in)`` of each linear of a layer."""
    h, q, kv, inter = config.hidden_size, config.q_size, config.kv_size, config.intermediate_size
    return {"attn.q": (q, h), "attn.k": (kv, h), "attn.v": (kv, h), "attn.o": (h, q),
            "mlp.gate": (inter, h), "mlp.up": (inter, h), "mlp.down": (h, inter)}


def check_options(config: ModelConfig, options: AwqOptions) -> None:
    """One sentence for weight flags this model cannot be quantized with."""
    if options.w_bits != BITS:
        raise ConfigError(
            f"--w-bits {options.w_bits} is not supported: auto_awq writes 4-bit weights "
            "(AutoAWQ's GEMM layout); pass --w-bits 4."
        )
    group = options.w_group_size
    if group <= 0:
        raise ConfigError(f"--w-group-size must be a positive number, got {group}.")
    shapes = linear_shapes(config)
    inputs = [k for _, k in shapes.values()]
    for name, (out, k) in shapes.items():
        if k % group:
            fits = [g for g in _USUAL_GROUP_SIZES if all(i % g == 0 for i in inputs)]
            fits = fits or [g for g in range(8, math.gcd(*inputs) + 1, 8)
                            if all(i % g == 0 for i in inputs)]
            hint = (f"use a group size that divides every layer's input size: "
                    f"{', '.join(map(str, fits[:-1]))}{' or ' if len(fits) > 1 else ''}{fits[-1]}"
                    if fits else "no usual group size divides every layer's input size")
            raise ConfigError(
                f"--w-group-size {group} does not divide the input size {k} of "
                f"layers.0.{name}; {hint}."
            )
        if out % 8:
            raise ConfigError(
                f"layers.0.{name} has {out} outputs, which AutoAWQ's packing (8 per int32) "
                "cannot hold; this model cannot be written in the AWQ layout."
            )


def quantization_config(options: AwqOptions) -> dict:
    """``quantization_config`` of the output's config.json, as AutoAWQ writes it."""
    return {"quant_method": "awq", "bits": options.w_bits, "group_size": options.w_group_size,
            "zero_point": options.zero_point, "version": "gemm"}


def auto_awq(model_path: str | Path, work_dir: str | Path, calib: CalibOptions,
             options: AwqOptions) -> Path:
    """Quantize ``model_path`` with AWQ and write the AutoAWQ-layout folder ``work_dir``."""
    work_dir = Path(work_dir)
    calib.check()
    info = open_model(model_path)
    config = info.config
    check_options(config, options)
    reused = None
    if calib.samples:
        reused = reusable_calibration(work_dir, calibration_meta(info, calib))
    else:
        check_new_work_dir(work_dir)
    device = resolve_device(calib.device)
    dtype = compute_dtype(info, device)
    samples = load_samples(info, calib) if calib.samples else None
    with torch.inference_mode(), CheckpointWriter(work_dir, info) as writer:
        writer.check([f"layers.0.{n}.qweight" for n in LINEARS] + ["layers.0.input_norm"])
        model = HostModel.load(info)
        for name, tensor in model.globals.items():
            writer.add(name, tensor.to(torch.float16))
        quantizer = _LayerQuantizer(model, samples, device, dtype, options, reused, calib.batch_size)
        with LayerProgress("AWQ", config.num_layers) as progress:
            for i in range(config.num_layers):
                summary = quantizer.run(i, progress)
                for name, tensor in quantizer.tensors.items():
                    writer.add(f"layers.{i}.{name}", tensor)
                model.release(i)
                progress.layer_done(i, summary)
        return writer.finish(output_config(info, quantization_config(options), "float16"))


class _LayerQuantizer:
    """The per-layer steps; ``run(i)`` leaves the layer's output tensors in ``tensors``."""

    def __init__(self, model: HostModel, samples: torch.Tensor | None, device: torch.device,
                 dtype: torch.dtype, options: AwqOptions, reused: Calibration | None,
                 batch_size: int) -> None:
        self.model, self.device, self.dtype = model, device, dtype
        self.options, self.reused = options, reused
        self.config = model.info.config
        self.fake = partial(fake_quantize, group_size=options.w_group_size,
                            zero_point=options.zero_point)
        self.runner = None
        if samples is not None:
            self.runner = LayerwiseRunner(model, samples, device, dtype, batch_size)
        self.tensors: dict[str, torch.Tensor] = {}

    def run(self, index: int, progress: LayerProgress) -> str:
        if self.runner is None:
            layer = self.model.layer(index, self.device, self.dtype)
            notes = "round-to-nearest"
        else:
            layer = self.runner.layer(index)
            progress.step(f"layer {index + 1}: calibration pass")
            every = max(1, self.runner.tokens // CLIP_TOKENS)
            stats, outputs = layer_stats(
                self.runner, layer, lambda: ChannelStats(sample_every=every, sample_limit=CLIP_TOKENS)
            )
            notes = self._search(index, layer, stats, progress)
            self.runner.advance(outputs)
        progress.step(f"layer {index + 1}: packing")
        self.tensors = self._pack(layer)
        return notes

    def _x_mean(self, index: int, group: str, stats: dict[str, ChannelStats]) -> torch.Tensor:
        if self.reused is not None:
            first = next(n for n, g in INPUT_OF.items() if g == group)
            return self.reused.absmean[f"layers.{index}.{first}"].to(self.device)
        return stats[group].absmean

    def _search(self, index: int, layer: LayerWeights, stats: dict[str, ChannelStats],
                progress: LayerProgress) -> str:
        notes = []
        samples = {group: s.sample for group, s in stats.items()}
        for group in scale_groups(self.config):
            progress.step(f"layer {index + 1}: scales of {group.name}")
            w_mean = weight_mean([layer[f"{n}.weight"] for n in group.linears],
                                 self.options.w_group_size)
            candidates = scale_candidates(self._x_mean(index, group.name, stats),
                                          self.options.search_scale, w_mean)
            best, losses = search_scales(
                self.runner, layer, group, candidates,
                lambda s, g=group: scaled_projector(layer, g, s, self.fake),
            )
            scales = candidates[best].to(self.device)
            fold_scales(layer, group, scales)
            samples[group.name] = samples[group.name] / scales.to(samples[group.name].dtype)
            if self.options.search_scale:
                # Against r = 0, which is round-to-nearest.
                gain = 1 - losses[best] / losses[0] if losses[0] > 0 else 0.0
                kind = "x/w" if best >= N_GRID else "x"
                notes.append(f"{group.name} {kind} r={best % N_GRID / N_GRID:.2f} "
                             f"({gain:.0%} less error)")
        progress.step(f"layer {index + 1}: clipping")
        for name in LINEARS:
            if name in CLIP_SKIP:
                continue
            key = f"{name}.weight"
            bound = search_clip(layer[key], samples[INPUT_OF[name]], self.options.w_group_size,
                                self.fake)
            layer[key] = apply_clip(layer[key], bound)
        return ", ".join(notes) or "scales r=0.50"

    def _pack(self, layer: LayerWeights) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, tensor in layer.items():
            linear = name.rsplit(".", 1)[0]
            if name.endswith(".weight") and linear in LINEARS:
                packed = quantize_linear(tensor.float(), self.options.w_group_size,
                                         self.options.zero_point)
                out[f"{linear}.qweight"] = packed.qweight
                out[f"{linear}.qzeros"] = packed.qzeros
                out[f"{linear}.scales"] = packed.scales
            else:  # norms and biases
                out[name] = tensor.to(torch.float16)
        return out
