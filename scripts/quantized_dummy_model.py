"""A model folder for benchmarking a quantized format with ``--load-format dummy``: a copy of
MODEL_DIR's files whose ``config.json`` also declares FORMAT's ``quantization_config``, so the
dummy loader makes random weights in that format (AutoAWQ int4 with group 128 for ``awq``;
LMDeploy's ``smooth_quant`` W8A8 for ``int8`` and ``fp8``). ``scripts/gpu_check.sh`` uses it for
``GPU_CHECK_QUANT``.

    python scripts/quantized_dummy_model.py MODEL_DIR OUT_DIR {awq,int8,fp8} [--group-size 128]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

QUANTIZATION_CONFIGS = {
    "awq": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
            "version": "gemm"},
    "int8": {"quant_method": "smooth_quant", "quant_dtype": "int8"},
    "fp8": {"quant_method": "smooth_quant", "quant_dtype": "float8_e4m3fn"},
}


def write(model_dir: Path, out_dir: Path, fmt: str, group_size: int = 128) -> Path:
    """``out_dir`` holding ``model_dir``'s files with ``fmt``'s quantization_config (AWQ's
    groups of ``group_size``)."""
    config = json.loads((model_dir / "config.json").read_text())
    if "quantization_config" in config:
        raise SystemExit(f"{model_dir} is already quantized ({config['quantization_config']}).")
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in model_dir.iterdir():
        if path.is_file() and path.name != "config.json":
            shutil.copy2(path, out_dir / path.name)
    config["quantization_config"] = dict(QUANTIZATION_CONFIGS[fmt])
    if fmt == "awq":
        config["quantization_config"]["group_size"] = group_size
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("format", choices=sorted(QUANTIZATION_CONFIGS))
    parser.add_argument("--group-size", type=int, default=128, help="AWQ's group size")
    args = parser.parse_args()
    print(write(args.model_dir, args.out_dir, args.format, args.group_size))


if __name__ == "__main__":
    main()
