"""`lmforge lite auto_awq` of Llama-3-8B's architecture on a GPU: minutes and peak memory.

Writes a random-weight bf16 checkpoint of benchmarks/models/llama-3-8b/config.json to local disk
(skipped when it is already there), then runs the real command on it with --device cuda, and
prints the wall time, the peak host memory (resident set of the quantizing process) and the peak
device memory (nvidia-smi, sampled twice a second). Random weights have no outliers, so the
accuracy is not the point: the time and memory of the layer-by-layer run are.

Calibration text: this repository's own Markdown and Python files (the GPU machine reaches no
package registry). Tokenizer: --tokenizer DIR (default $GPU_CHECK_TOKENIZER, else
.whl/tokenizer, else the demo model's). Usage:

    python scripts/gpu_auto_awq_8b.py OUT_DIR [--calib-samples 128] [--calib-seqlen 2048]
        [--batch-size 8] [--w-group-size 128] [--json OUT_DIR/auto_awq_8b.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "benchmarks" / "models" / "llama-3-8b" / "config.json"


def write_random_checkpoint(folder: Path, tokenizer: Path | None) -> None:
    """bf16 safetensors shards of random weights (made on the GPU, a layer at a time)."""
    import torch
    from lmforge.lite.writer import HfNames
    from lmforge.model.loader import load_model_info
    from lmforge.model.weights import iter_dummy
    from safetensors.torch import save_file

    if (folder / "model.safetensors.index.json").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFIG, folder / "config.json")
    info = load_model_info(folder, load_format="dummy")
    names = HfNames(info)
    shard, size, weight_map, index = {}, 0, {}, 0

    def flush() -> None:
        nonlocal shard, size, index
        index += 1
        name = f"model-{index:05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        shard, size = {}, 0

    for name, tensor in iter_dummy(info.config, device="cuda"):
        shard[names.hf(name)] = tensor.to(torch.bfloat16).cpu()
        size += tensor.numel() * 2
        if size >= 4 << 30:
            flush()
    if shard:
        flush()
    total = sum((folder / f).stat().st_size for f in set(weight_map.values()))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    if tokenizer is not None:
        for path in tokenizer.iterdir():
            if path.is_file():
                shutil.copy(path, folder / path.name)


def find_tokenizer(given: str | None) -> Path | None:
    for candidate in (given, os.environ.get("GPU_CHECK_TOKENIZER"), ROOT / ".whl" / "tokenizer"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    from lmforge.demo import demo_model_path
    from lmforge.tokenizer import Tokenizer

    out = Path("/tmp/lmforge-demo-tokenizer")
    if not out.is_dir():
        Tokenizer.from_pretrained(demo_model_path()).hf.save_pretrained(str(out))
    return out


def calibration_text(out: Path) -> Path:
    files = sorted([*ROOT.rglob("*.md"), *ROOT.rglob("*.py")])
    texts = [p.read_text(errors="replace") for p in files if ".venv" not in p.parts]
    path = out / "calibration.txt"
    # Twice over: about 600k tokens, enough for LMDeploy's default 128 samples of 2048.
    path.write_text("\n\n".join(texts * 2))
    return path


class DevicePeak:
    """The largest nvidia-smi memory.used of GPU 0 (MiB) while it runs."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                     "-i", os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]],
                    capture_output=True, text=True, timeout=5).stdout
                self.peak = max(self.peak, int(out.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass

    def __enter__(self) -> DevicePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--calib-seqlen", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--w-group-size", type=int, default=128)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / "llama-3-8b-random"
    start = time.perf_counter()
    write_random_checkpoint(model, find_tokenizer(args.tokenizer))
    print(f"random checkpoint ready in {time.perf_counter() - start:.0f} s", flush=True)
    work = args.out / "llama-3-8b-awq"
    shutil.rmtree(work, ignore_errors=True)
    cmd = ["lmforge", "lite", "auto_awq", str(model), "--work-dir", str(work), "--device", "cuda",
           "--calib-dataset", str(calibration_text(args.out)),
           "--calib-samples", str(args.calib_samples), "--calib-seqlen", str(args.calib_seqlen),
           "--batch-size", str(args.batch_size), "--w-group-size", str(args.w_group_size)]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    with DevicePeak() as device:
        done = subprocess.run(cmd)
    minutes = (time.perf_counter() - start) / 60
    host_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    result = {"exit_code": done.returncode, "minutes": round(minutes, 2),
              "peak_host_gib": round(host_gib, 2), "peak_device_gib": round(device.peak / 1024, 2),
              "calib_samples": args.calib_samples, "calib_seqlen": args.calib_seqlen,
              "batch_size": args.batch_size, "w_group_size": args.w_group_size}
    if done.returncode == 0:
        size = sum(p.stat().st_size for p in work.glob("*.safetensors"))
        result["output_gb"] = round(size / 1e9, 2)
    print(json.dumps(result, indent=2))
    (args.json or args.out / "auto_awq_8b.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
