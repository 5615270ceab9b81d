#!/usr/bin/env bash
# The model families on one H200 (about 9 minutes): their GPU tests (the fused MoE kernel at
# Mixtral's and Qwen3-MoE's shapes, soft-capped attention, GeGLU and 1 + w norms at Gemma-2's,
# q/k norms in the rotary kernel, every family through the compiled kernels and CUDA graphs),
# the MoE kernel's timings, then W1 of Qwen3-8B, Gemma-2-9B, Phi-3-mini, Mixtral-8x7B and
# Qwen3-30B-A3B against each one's bandwidth floor, and W2 of Qwen3-30B-A3B. JSON goes to
# OUTDIR; a table against the targets is printed last.
#
#   scripts/gpu_check_families.sh OUTDIR  (the same as GPU_CHECK_FAMILIES=1 scripts/gpu_check.sh)
#
# GPU_CHECK_MOE_SWEEP=1 also times every tile choice of the MoE kernel (scripts/bench_moe.py
# --sweep, a few minutes more). scripts/gpu_check.sh installs lmforge and sets up the tokenizer
# (see its header), then sources this file for its stages instead of its own.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  GPU_CHECK_FAMILIES=1 exec "$(dirname "$0")/gpu_check.sh" "$@"
fi

FAMILY_MODELS=(qwen3-8b gemma-2-9b phi-3-mini mixtral-8x7b qwen3-30b-a3b)
for name in "${FAMILY_MODELS[@]}"; do
  mkdir -p "$OUT/$name"
  cp "$ROOT/benchmarks/models/$name/config.json" "$OUT/$name/"
  [ -d "$TOKENIZER" ] && cp "$TOKENIZER"/* "$OUT/$name/"
done
SWEEP=()
[ "${GPU_CHECK_MOE_SWEEP:-0}" = 1 ] && SWEEP=(--sweep)

stage families-gpu-tests "${GPU_CHECK_FAMILIES_TESTS_S:-180}" python3 -m pytest -q -m gpu \
  -p no:cacheprovider plugins/torch_triton/tests -k "moe or family or gemma2 or head_norms" \
  --junitxml="$OUT/families-gpu-tests.xml"
stage moe-kernel "${GPU_CHECK_MOE_KERNEL_S:-120}" python3 scripts/bench_moe.py "${SWEEP[@]}" \
  --json "$OUT/moe-kernel.json"
stage families-dense "${GPU_CHECK_FAMILIES_DENSE_S:-240}" python3 scripts/bench_families.py \
  "$OUT/qwen3-8b" "$OUT/gemma-2-9b" "$OUT/phi-3-mini" --json "$OUT/families-dense.json"
stage families-moe "${GPU_CHECK_FAMILIES_MOE_S:-300}" python3 scripts/bench_families.py \
  "$OUT/mixtral-8x7b" "$OUT/qwen3-30b-a3b" --w2 qwen3-30b-a3b "${TOKENIZER_ARGS[@]}" \
  --json "$OUT/families-moe.json"

echo
echo "=== stages"
printf '  %s\n' "${STATUS[@]}" | tee "$OUT/stages.txt"
python3 - "$OUT" <<'PY'
import json, pathlib, sys

out = pathlib.Path(sys.argv[1])
models = []
for name in ("families-dense", "families-moe"):
    path = out / f"{name}.json"
    if path.is_file():
        report = json.loads(path.read_text())
        models += [dict(m, device=report["device"]) for m in report["models"]]
print("\n=== model families, W1 (batch 1, 128 -> 512) against the bandwidth floor")
for m in models:
    if "error" in m:
        print(f"  {m['model']:<14} failed: {m['error']}")
        continue
    w1, floor, target = m["w1"]["output_tok_s"], m["floor_tok_s_batch1"], m["target_share"]
    share = w1 / floor
    verdict = "meets" if share >= target else f"misses by {target - share:.0%} of the floor"
    w2 = f"; W2 {m['w2']['request_s']:.2f} req/s" if "w2" in m else ""
    print(f"  {m['model']:<14} {w1:7.1f} tok/s = {share:4.0%} of {floor:6.1f} tok/s "
          f"(target {target:.0%}: {verdict}){w2}  [{m['device']}]")
path = out / "moe-kernel.json"
if path.is_file():
    print("\n=== fused MoE kernel (bf16)")
    for row in json.loads(path.read_text())["rows"]:
        print(f"  {row['shape']:<14} tokens {row['tokens']:>5}: {row['kernel_us']:9.1f} us, "
              f"{row['weight_gb_s']:7.1f} GB/s of chosen experts; reference "
              f"{row['reference_us']:9.1f} us")
PY
exit 0
