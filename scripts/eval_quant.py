"""Accuracy of `lmforge lite` on the demo model (SmolLM2-135M-Instruct), on the CPU.

Calibrates on every Shakespeare work but Hamlet and measures the perplexity of held-out Hamlet
(non-overlapping windows), for: the unquantized model, round-to-nearest int4 g64
(`auto_awq --calib-samples 0`), AWQ int4 g64, W8A8 int8 without smoothing
(`smooth_quant --calib-samples 0`), W8A8 int8 smoothed and W8A8 fp8 smoothed. Each quantized
folder is made by the real CLI. The AWQ model also answers the README's question greedily.

`--via engine` scores through lmforge's own engine (`pipeline().get_ppl`, the pytorch engine on
the CPU); `--via reference` through a plain-PyTorch reference that dequantizes the folder and
quantizes activations per token as the W8A8 engine does. Usage:

    python scripts/eval_quant.py OUT_DIR [--via engine] [--calib-samples 64] [--calib-seqlen 512]
        [--eval-windows 16] [--eval-len 512] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

QUESTION = "What is the capital of France?"
HELD_OUT = "hamlet_gut"


def make_runs(calib: Path, samples: int, seqlen: int) -> dict[str, list[str]]:
    text = ["--calib-dataset", str(calib), "--calib-samples", str(samples),
            "--calib-seqlen", str(seqlen), "--device", "cpu"]
    rtn = ["--calib-samples", "0", "--device", "cpu"]
    return {  # the cheap runs first
        "w8a8_int8_unsmoothed": ["smooth_quant", *rtn],
        "w8a8_int8_smoothed": ["smooth_quant", *text],
        "w8a8_fp8_smoothed": ["smooth_quant", *text, "--quant-dtype", "fp8"],
        "rtn_int4_g64": ["auto_awq", *rtn, "--w-group-size", "64"],
        "awq_int4_g64": ["auto_awq", *text, "--w-group-size", "64"],
    }


def quantize(model: Path, out: Path, args: list[str]) -> float:
    start = time.perf_counter()
    if not (out / "config.json").exists():
        cmd = ["lmforge", "lite", args[0], str(model), "--work-dir", str(out), *args[1:]]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return time.perf_counter() - start


# ---------------------------------------------------------------- scoring through the engine


def engine_scores(folder: Path, windows: list[list[int]]) -> tuple[float, str]:
    from lmforge import GenerationConfig, PytorchEngineConfig, pipeline

    with pipeline(str(folder), backend_config=PytorchEngineConfig(device="cpu")) as pipe:
        nll = sum(pipe.get_ppl(windows)) / len(windows)
        answer = pipe([QUESTION], gen_config=GenerationConfig(max_new_tokens=32))[0].text
    return nll, answer


# ---------------------------------------------------------------- the plain-PyTorch reference


def reference_model(folder: Path):
    """The folder as a HostModel with dequantized weights, and its projector factory."""
    import torch
    import torch.nn.functional as F
    from lmforge.lite.decoder import dense_projector
    from lmforge.lite.host_model import HostModel
    from lmforge.model.loader import load_model_info
    from lmforge.model.weights import iter_safetensors
    from lmforge_quant_awq.int4 import AwqTensors
    from lmforge_quant_smoothquant.w8 import fake_quantize_tokens

    info = load_model_info(folder)
    if info.format == "gguf":
        model = HostModel.load(info)
        return model, dense_projector
    quant = info.hf_config.get("quantization_config") or {}
    raw: dict[str, torch.Tensor] = {}
    for name, tensor in iter_safetensors(info.shards):
        base, _, suffix = name.rpartition(".")
        if suffix in ("qweight", "qzeros", "scales", "scale"):
            (canonical, _), = info.adapter.map_weights(f"{base}.weight", tensor)
            raw[canonical.removesuffix("weight") + suffix] = tensor
        else:
            for canonical, t in info.adapter.map_weights(name, tensor):
                raw[canonical] = t
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in raw.items():
        if name.endswith(".qweight"):
            prefix = name.removesuffix("qweight")
            awq = AwqTensors(tensor, raw[prefix + "qzeros"], raw[prefix + "scales"])
            tensors[prefix + "weight"] = awq.dequantize()
        elif name.endswith(".scale"):
            prefix = name.removesuffix("scale")
            tensors[prefix + "weight"] = raw[prefix + "weight"].float() * tensor.float()
        elif not name.endswith((".qzeros", ".scales")) and name not in tensors:
            tensors[name] = tensor
    layers = [{} for _ in range(info.config.num_layers)]
    globals_ = {}
    for name, tensor in tensors.items():
        if name.startswith("layers."):
            _, i, rest = name.split(".", 2)
            layers[int(i)][rest] = tensor
        else:
            globals_[name] = tensor
    model = HostModel(info, globals_, layers)
    if quant.get("quant_method") != "smooth_quant":
        return model, dense_projector
    act_dtype = torch.int8 if quant["quant_dtype"] == "int8" else torch.float8_e4m3fn

    def w8a8_projector(layer):
        def proj(name, x):
            xq = fake_quantize_tokens(x, act_dtype)
            return F.linear(xq, layer[f"{name}.weight"], layer.get(f"{name}.bias"))

        return proj

    return model, w8a8_projector


def reference_logits(model, make_proj, ids):
    import torch
    import torch.nn.functional as F
    from lmforge.lite.decoder import rms_norm
    from lmforge.lite.layerwise import LayerwiseRunner

    runner = LayerwiseRunner(model, ids, torch.device("cpu"), torch.float32, batch_size=4)
    for i in range(model.info.config.num_layers):
        runner.advance(runner.forward(runner.layer(i), make_proj))
    head = model.globals.get("lm_head", model.globals["embed"]).float()
    norm = model.globals["norm"].float()
    return [F.linear(rms_norm(h, norm, model.info.config.norm_eps), head) for h in runner.hidden]


def reference_scores(folder: Path, windows: list[list[int]], tokenizer) -> tuple[float, str]:
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        model, make_proj = reference_model(folder)
        ids = torch.tensor(windows)
        nll = 0.0
        for logits, batch in zip(reference_logits(model, make_proj, ids), ids.split(4), strict=True):
            nll += F.cross_entropy(logits[:, :-1].flatten(0, 1), batch[:, 1:].flatten(),
                                   reduction="sum").item()
        nll /= ids.shape[0] * (ids.shape[1] - 1)
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}],
                                               add_generation_prompt=True, tokenize=False)
        tokens = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        start = len(tokens)
        for _ in range(32):
            logits = reference_logits(model, make_proj, torch.tensor([tokens]))[0]
            tokens.append(int(logits[0, -1].argmax()))
            if tokens[-1] == tokenizer.eos_token_id:
                break
        answer = tokenizer.decode(tokens[start:], skip_special_tokens=True)
    return nll, answer


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--via", choices=("engine", "reference"), default="engine")
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--calib-seqlen", type=int, default=512)
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--eval-len", type=int, default=512)
    parser.add_argument("--only", nargs="*", help="run only these configurations")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from lmforge.demo import demo_model_path
    from lmforge.lite.shakespeare import shakespeare_texts
    from transformers import AutoTokenizer

    model = demo_model_path()
    args.out.mkdir(parents=True, exist_ok=True)
    texts = shakespeare_texts()
    calib = args.out / "calibration.txt"
    calib.write_text("\n\n".join(t for name, t in texts.items() if name != HELD_OUT))
    tokenizer = AutoTokenizer.from_pretrained(str(model.parent), gguf_file=model.name)
    held_out = tokenizer(texts[HELD_OUT], add_special_tokens=False)["input_ids"]
    n = args.eval_len
    windows = [held_out[i * n:(i + 1) * n] for i in range(args.eval_windows)]
    if len(windows[-1]) < n:
        sys.exit(f"Hamlet has too few tokens for {args.eval_windows} windows of {n}.")

    folders = {"unquantized": model}
    seconds = {}
    for name, run in make_runs(calib, args.calib_samples, args.calib_seqlen).items():
        if args.only and name not in args.only:
            continue
        folders[name] = args.out / name
        seconds[name] = quantize(model, folders[name], run)

    results = {}
    for name, folder in folders.items():
        if args.via == "engine":
            nll, answer = engine_scores(folder, windows)
        else:
            nll, answer = reference_scores(folder, windows, tokenizer)
        results[name] = {"ppl": math.exp(nll), "nll": nll, "answer": answer,
                         "quantize_s": seconds.get(name)}
        print(f"{name:24s} ppl {math.exp(nll):8.3f}  answer: {answer!r}", flush=True)

    base = results["unquantized"]["ppl"]
    print("\n| model | perplexity | vs unquantized |\n|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['ppl']:.3f} | {100 * (r['ppl'] / base - 1):+.2f} % |")
    if "rtn_int4_g64" in results and "awq_int4_g64" in results:
        rtn, awq = results["rtn_int4_g64"]["ppl"] - base, results["awq_int4_g64"]["ppl"] - base
        print(f"\nAWQ's increase is {100 * awq / rtn:.0f} % of round-to-nearest's.")
    meta = {"via": args.via, "calib_samples": args.calib_samples, "calib_seqlen": args.calib_seqlen,
            "eval_tokens": args.eval_windows * n, "held_out": HELD_OUT}
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
