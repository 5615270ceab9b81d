"""``lmforge lite calibrate``: per-channel input statistics of every linear, saved for reuse."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import ConfigError
from ..model.loader import ModelInfo
from .decoder import LayerWeights
from .host_model import HostModel
from .layerwise import LayerwiseRunner
from .options import CalibOptions, compute_dtype, load_samples, open_model, resolve_device
from .progress import LayerProgress
from .stats import Calibration, CalibrationMeta, ChannelStats, recording_projector
from .workdir import check_new_work_dir


def calibration_meta(info: ModelInfo, options: CalibOptions) -> CalibrationMeta:
    """What identifies a calibration run of ``info`` with ``options``."""
    dataset = options.dataset
    if Path(dataset).expanduser().is_file():
        dataset = str(Path(dataset).expanduser().resolve())
    return CalibrationMeta(
        model=str(Path(info.path).resolve()), dataset=dataset, samples=options.samples,
        seqlen=options.seqlen, seed=options.seed,
    )


def layer_stats(
    runner: LayerwiseRunner, layer: LayerWeights,
    new_stats: Callable[[], ChannelStats] = ChannelStats,
) -> tuple[dict[str, ChannelStats], list[torch.Tensor]]:
    """The layer's input statistics per group, and its outputs (the next layer's input)."""
    stats: dict[str, ChannelStats] = {}
    outputs = runner.forward(layer, lambda weights: recording_projector(weights, stats, new_stats))
    return stats, outputs


def calibrate(model_path: str | Path, work_dir: str | Path, options: CalibOptions) -> Calibration:
    """Run the calibration text through the model and write ``calibration.json`` and
    ``calibration.pt`` into ``work_dir``."""
    work_dir = Path(work_dir)
    options.check()
    check_new_work_dir(work_dir)
    info = open_model(model_path)
    device = resolve_device(options.device)
    dtype = compute_dtype(info, device)
    if options.samples == 0:
        raise ConfigError("--calib-samples must be at least 1 to calibrate.")
    samples = load_samples(info, options)
    meta = calibration_meta(info, options)
    meta.tokens, meta.device, meta.dtype = samples.numel(), device.type, str(dtype).split(".")[-1]
    calibration = Calibration(meta, {}, {})
    with torch.inference_mode():
        model = HostModel.load(info)
        runner = LayerwiseRunner(model, samples, device, dtype, options.batch_size)
        layers = info.config.num_layers
        with LayerProgress("Calibrating", layers) as progress:
            for i in range(layers):
                progress.step(f"layer {i + 1}/{layers}")
                stats, outputs = layer_stats(runner, runner.layer(i))
                calibration.add_layer(i, stats)
                runner.advance(outputs)
                model.release(i)
                progress.layer_done(i)
    work_dir.mkdir(parents=True, exist_ok=True)
    calibration.save(work_dir)
    return calibration
