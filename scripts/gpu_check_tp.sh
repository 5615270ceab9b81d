#!/usr/bin/env bash
# Tensor parallelism on a machine with two GPUs (nvidia-h200-x2), in one run of about 8 minutes:
# the tp GPU tests, the all-reduce micro-benchmark, W1/W4/W2 on Llama-3-8B's architecture at
# tp=1 and tp=2, and Llama-3-70B's at tp=2 (W1, W4 batch 64). JSON goes to OUTDIR; a table of
# tp=2 against tp=1 and the targets is printed last.
#
#   scripts/gpu_check_tp.sh OUTDIR      (the same as GPU_CHECK_TP=1 scripts/gpu_check.sh OUTDIR)
#
# scripts/gpu_check.sh installs lmforge and sets up the model folder and the tokenizer (see its
# header), then sources this file for its stages instead of its own.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  GPU_CHECK_TP=1 exec "$(dirname "$0")/gpu_check.sh" "$@"
fi

# NVLink multicast stays off (it can take a shared host's GPUs down); nothing here uses it.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
MODEL_70B="$OUT/llama-3-70b"
mkdir -p "$MODEL_70B"
cp "$ROOT/benchmarks/models/llama-3-70b/config.json" "$MODEL_70B/"
[ -d "$TOKENIZER" ] && cp "$TOKENIZER"/* "$MODEL_70B/"

stage topology 30 python3 -m lmforge.cli.main check_env
stage tp-gpu-tests "${GPU_CHECK_TP_TESTS_S:-200}" python3 -m pytest -q -m gpu -p no:cacheprovider \
  plugins/torch_triton/tests/test_tp_gpu.py --junitxml="$OUT/tp-gpu-tests.xml"
stage all-reduce "${GPU_CHECK_ALL_REDUCE_S:-120}" python3 scripts/bench_all_reduce.py --world 2 \
  --json "$OUT/all-reduce.json"
stage tp1-8b "${GPU_CHECK_TP1_S:-150}" python3 scripts/bench_tp.py "$MODEL" --tp 1 \
  "${TOKENIZER_ARGS[@]}" --json "$OUT/tp1-8b.json"
stage tp2-8b "${GPU_CHECK_TP2_S:-150}" python3 scripts/bench_tp.py "$MODEL" --tp 2 \
  "${TOKENIZER_ARGS[@]}" --json "$OUT/tp2-8b.json"
stage tp2-70b "${GPU_CHECK_TP2_70B_S:-200}" python3 scripts/bench_tp.py "$MODEL_70B" --tp 2 \
  --workloads w1 w4 --w4-batch 64 --max-batch-size 64 --json "$OUT/tp2-70b.json"

echo
echo "=== stages"
printf '  %s\n' "${STATUS[@]}" | tee "$OUT/stages.txt"
python3 - "$OUT" <<'PY'
import json, pathlib, sys

out = pathlib.Path(sys.argv[1])


def load(name):
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def w4(report, batch):
    return next((r["output_tok_s"] for r in report.get("w4", []) if r["batch_size"] == batch),
                None)


def fmt(value, unit="", digits=1):
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


tp1, tp2, big, ar = load("tp1-8b"), load("tp2-8b"), load("tp2-70b"), load("all-reduce")
figures = {"W1 tok/s": (lambda r: r.get("w1", {}).get("output_tok_s"), 1.5)}
for batch, target in ((1, 1.5), (16, 1.5), (64, 1.4), (256, 1.4)):
    figures[f"W4 batch {batch} tok/s"] = (lambda r, b=batch: w4(r, b), target)
figures["W2 req/s"] = (lambda r: r.get("w2", {}).get("request_s"), 1.6)
summary = {}
print(f"\n=== tensor parallelism on {tp2.get('device') or tp1.get('device')}: "
      "Llama-3-8B's architecture, bf16 random weights")
print(f"{'workload':<18}{'tp=1':>12}{'tp=2':>12}{'tp2/tp1':>9}{'target':>9}")
for name, (get, target) in figures.items():
    a, b = get(tp1), get(tp2)
    ratio = b / a if a and b else None
    verdict = "" if ratio is None else ("ok" if ratio >= target else "MISS")
    summary[name] = {"tp1": a, "tp2": b, "ratio": ratio, "target": target}
    print(f"{name:<18}{fmt(a):>12}{fmt(b):>12}{fmt(ratio, 'x', 2):>9}{f'>={target}x':>9}  {verdict}")
if ar:
    first = ar["rows"][0]  # 8 KB: one token's hidden state
    peer = [first[k] for k in ("one-shot_graph_us", "two-shot_graph_us") if k in first]
    best = min(peer) if peer else None
    summary["all_reduce_8KB_graph_us"] = {"peer_memory": best, "nccl": first["nccl_graph_us"]}
    print(f"all-reduce of 8 KB in a graph: peer memory {fmt(best, ' us')}, NCCL "
          f"{fmt(first['nccl_graph_us'], ' us')} (target <= 8 us)")
    print("step command over gloo: " + ", ".join(f"{k} {v:.0f} us"
                                                 for k, v in ar["control_us"].items()))
if big:
    floor, w1 = big["floor_tok_s_batch1"], big.get("w1", {}).get("output_tok_s")
    summary["llama-3-70b tp=2"] = {"w1": w1, "w4_batch64": w4(big, 64), "floor_batch1": floor}
    share = f" ({w1 / floor:.0%} of it)" if w1 else ""
    print(f"Llama-3-70B tp=2: W1 {fmt(w1, ' tok/s')} against a bandwidth floor of "
          f"{floor:.1f} tok/s{share}; W4 batch 64 {fmt(w4(big, 64), ' tok/s')}; "
          f"{big['weight_bytes_per_gpu'] / 1e9:.1f} GB of weights per GPU")
(out / "tp-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
PY
