#!/usr/bin/env bash
# One run on the GPU test machine: install lmforge, run the gpu-marked tests, then the W1, W4 and
# W2 benchmarks (and W3 through api_server when GPU_CHECK_W3=1; a per-kernel profile of decode
# steps when GPU_CHECK_PROFILE=1; the K/V cache int8/int4 runs when GPU_CHECK_KVQ=1; W2 with every
# request constrained to a small JSON schema, where a step's time goes with and without it, and
# the grammar library's host cost per step, when GPU_CHECK_STRUCTURED=1; first of all, the
# serving tail's profile when GPU_CHECK_SERVE_TAIL=1; see below) on Llama-3-8B's architecture
# with random bf16 weights. Full results go to OUTDIR as JSON; a
# short table is printed last. GPU_CHECK_SKIP="gpu-tests w4" skips the stages it names.
# GPU_CHECK_TP=1 runs tensor parallelism's stages instead (scripts/gpu_check_tp.sh);
# GPU_CHECK_FAMILIES=1 the model families' (scripts/gpu_check_families.sh).
#
#   scripts/gpu_check.sh OUTDIR
#
# GPU_CHECK_BACKENDS (default "pytorch") lists the engines W1, W4 and W2 run on, one after the
# other; with turbomind among them, one 8,192-token prefill step per engine and turbomind's
# engine-ready time from a converted folder are measured too (scripts/bench_prefill_ready.py).
# GPU_CHECK_TEST_PATHS limits the gpu-marked tests to those paths (default: all of them).
# GPU_CHECK_QUANT ("awq int8 fp8", default none) adds W1, W4 and W2 on random weights in those
# quantized formats.
#
# Wheels the machine lacks travel in .whl/ (see GPU.md; the server also needs fastapi-offline's,
# the core llguidance's: llguidance-*-abi3-manylinux*_x86_64.whl, one wheel for every Python)
# and are installed into /tmp/site. The demo
# model (98 MB) does not travel, so its tokenizer, which measures the ShareGPT lengths and decodes
# the random model's tokens, comes as a folder, GPU_CHECK_TOKENIZER (default .whl/tokenizer),
# saved beforehand on a machine that has the demo model:
#   python -c "from lmforge.demo import demo_model_path as d; from lmforge.tokenizer import \
#     Tokenizer as T; T.from_pretrained(d()).hf.save_pretrained('.whl/tokenizer')"
# Every
# stage has a time limit (seconds, overridable: GPU_CHECK_<STAGE>_S) so the whole run fits in
# nine minutes; a failed stage is reported and the run goes on.
set -uo pipefail

OUT=${1:?usage: scripts/gpu_check.sh OUTDIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOKENIZER=${GPU_CHECK_TOKENIZER:-$ROOT/.whl/tokenizer}
# The benchmark model: Llama-3-8B's config beside the tokenizer's files, with random weights.
MODEL="$OUT/llama-3-8b"
PORT=${GPU_CHECK_PORT:-23333}
mkdir -p "$OUT" "$MODEL"
cp "$ROOT/benchmarks/models/llama-3-8b/config.json" "$MODEL/"
TOKENIZER_ARGS=()
if [ -d "$TOKENIZER" ]; then
  cp "$TOKENIZER"/* "$MODEL/"
  TOKENIZER_ARGS=(--tokenizer "$TOKENIZER")
  # The tests' tiny models borrow the same tokenizer (see tests/conftest.py).
  export LMFORGE_TEST_TOKENIZER="${LMFORGE_TEST_TOKENIZER:-$TOKENIZER}"
fi
cd "$ROOT" || exit 1
declare -a STATUS=()

stage() {  # stage NAME LIMIT_S COMMAND...: run with a time limit, log to OUT/NAME.log, record
  local name=$1 limit=$2 start rc
  shift 2
  if [[ " ${GPU_CHECK_SKIP:-} " == *" $name "* ]]; then STATUS+=("$name skipped"); return 0; fi
  echo "=== $name (limit ${limit}s)"
  start=$(date +%s)
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  local took=$(( $(date +%s) - start ))
  if [ "$rc" -eq 0 ]; then STATUS+=("$name ok ${took}s")
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then STATUS+=("$name TIMED OUT after ${took}s")
  else STATUS+=("$name FAILED (exit $rc) after ${took}s"); fi
  return 0
}

install_lmforge() {
  if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || return 1
  fi
  local editable=(-e core)
  for plugin in plugins/*/; do
    [ -f "$plugin/pyproject.toml" ] && editable+=(-e "$plugin")
  done
  # Editable installs register the plugins' entry points and keep the image's torch and Triton.
  python3 -m pip install -q --no-deps --no-build-isolation --no-index "${editable[@]}" \
    || python3 -m pip install -q --no-deps --no-build-isolation --no-index \
         --break-system-packages "${editable[@]}"
}

# The sources are on the path too, so the benchmarks run even where the install fails.
SOURCES="$ROOT/core$(printf ':%s' "$ROOT"/plugins/*)"
export PYTHONPATH="/tmp/site:$SOURCES${PYTHONPATH:+:$PYTHONPATH}"
export LMFORGE_CACHE_DIR="${LMFORGE_CACHE_DIR:-$OUT/cache}"
BENCH=(python3 -m lmforge.cli.main bench)

export -f install_lmforge
stage install "${GPU_CHECK_INSTALL_S:-90}" bash -c install_lmforge
stage nvidia-smi 20 nvidia-smi
if [ "${GPU_CHECK_SERVE_TAIL:-0}" = 1 ]; then
  # First, while the machine is fresh: W3's 4 req/s load twice on one api_server, with what
  # both processes logged while the slowest first tokens waited (a tail in the first run only
  # is a first-use cost; scripts/profile_serve_tail.py says which kind).
  stage serve-tail "${GPU_CHECK_SERVE_TAIL_S:-240}" python3 scripts/profile_serve_tail.py \
    "$MODEL" --dtype bfloat16 --load-format dummy --runs 2
fi
if [ "${GPU_CHECK_TP:-0}" = 1 ]; then  # tensor parallelism's stages instead (two GPUs)
  source "$ROOT/scripts/gpu_check_tp.sh"
  exit 0
fi
if [ "${GPU_CHECK_FAMILIES:-0}" = 1 ]; then  # the model families' stages instead
  source "$ROOT/scripts/gpu_check_families.sh"
  exit 0
fi
read -r -a BACKENDS <<< "${GPU_CHECK_BACKENDS:-pytorch}"
read -r -a TEST_PATHS <<< "${GPU_CHECK_TEST_PATHS:-}"
stage gpu-tests "${GPU_CHECK_TESTS_S:-360}" python3 -m pytest -q -m gpu -p no:cacheprovider \
  --junitxml="$OUT/gpu-tests.xml" "${TEST_PATHS[@]}"
suffix() { [ "$1" = pytorch ] || printf -- '-%s' "$1"; }
for backend in "${BACKENDS[@]}"; do
  s=$(suffix "$backend")
  stage "w1$s" "${GPU_CHECK_W1_S:-90}" "${BENCH[@]}" generation "$MODEL" --backend "$backend" \
    --dtype bfloat16 --load-format dummy --batch-size 1 --input-len 128 --output-len 512 \
    --json "$OUT/w1$s.json"
  stage "w4$s" "${GPU_CHECK_W4_S:-150}" "${BENCH[@]}" generation "$MODEL" --backend "$backend" \
    --dtype bfloat16 --load-format dummy --batch-size 1 16 64 256 --input-len 128 \
    --output-len 128 --json "$OUT/w4$s.json"
done
if [[ " ${BACKENDS[*]} " == *" turbomind "* ]]; then
  stage prefill-ready "${GPU_CHECK_PREFILL_S:-150}" python3 scripts/bench_prefill_ready.py \
    "$MODEL" --backend "${BACKENDS[@]}" --json "$OUT/prefill-ready.json"
fi
if [ "${GPU_CHECK_PROFILE:-0}" = 1 ]; then
  # Where a decode step's time goes: the kernels of one graph replay at three batch sizes.
  for backend in "${BACKENDS[@]}"; do
    stage "profile$(suffix "$backend")" "${GPU_CHECK_PROFILE_S:-120}" python3 \
      scripts/profile_decode.py "$MODEL" --batch-size 1 64 256 --engine --backend "$backend"
  done
  if [[ " ${BACKENDS[*]} " == *" turbomind "* ]]; then
    stage turbomind-kernels "${GPU_CHECK_PROFILE_S:-120}" python3 \
      scripts/bench_turbomind_kernels.py
  fi
fi
for backend in "${BACKENDS[@]}"; do
  s=$(suffix "$backend")
  stage "w2$s" "${GPU_CHECK_W2_S:-150}" "${BENCH[@]}" throughput "$MODEL" --backend "$backend" \
    --dtype bfloat16 --load-format dummy --dataset sharegpt --num-prompts 1000 --seed 0 \
    "${TOKENIZER_ARGS[@]}" --json "$OUT/w2$s.json"
done

# Quantized weights (GPU_CHECK_QUANT, e.g. "awq int8 fp8"): W1, W4 and W2 on random weights in
# each format (scripts/quantized_dummy_model.py: AutoAWQ int4 g128, LMDeploy's W8A8), to set
# beside the bf16 figures above. A first start compiles the formats' kernels (cold Triton cache).
read -r -a QUANT_FORMATS <<< "${GPU_CHECK_QUANT:-}"
for fmt in "${QUANT_FORMATS[@]}"; do
  qmodel="$OUT/llama-3-8b-$fmt"
  python3 scripts/quantized_dummy_model.py "$MODEL" "$qmodel" "$fmt" > /dev/null || continue
  stage "w1-$fmt" "${GPU_CHECK_W1_S:-90}" "${BENCH[@]}" generation "$qmodel" --dtype bfloat16 \
    --load-format dummy --batch-size 1 --input-len 128 --output-len 512 --json "$OUT/w1-$fmt.json"
  stage "w4-$fmt" "${GPU_CHECK_W4_S:-150}" "${BENCH[@]}" generation "$qmodel" --dtype bfloat16 \
    --load-format dummy --batch-size 1 16 64 256 --input-len 128 --output-len 128 \
    --json "$OUT/w4-$fmt.json"
  stage "w2-$fmt" "${GPU_CHECK_W2_S:-150}" "${BENCH[@]}" throughput "$qmodel" --dtype bfloat16 \
    --load-format dummy --dataset sharegpt --num-prompts 1000 --seed 0 "${TOKENIZER_ARGS[@]}" \
    --json "$OUT/w2-$fmt.json"
done

if [ "${GPU_CHECK_STRUCTURED:-0}" = 1 ]; then
  # The same W2 requests, each constrained to a JSON schema of 500 records (long enough that
  # requests end at their W2 length, as unconstrained ones do); compare with w2.json.
  stage w2-json "${GPU_CHECK_W2_JSON_S:-180}" "${BENCH[@]}" throughput "$MODEL" --dtype bfloat16 \
    --load-format dummy --dataset sharegpt --num-prompts 1000 --seed 0 "${TOKENIZER_ARGS[@]}" \
    --response-format benchmarks/structured/w2-json-schema.json --json "$OUT/w2-json.json"
  # Where a step's time goes, host phase by phase and device (CUDA events), per batch-size
  # bucket, without and with the constraint; the constrained run also writes a torch.profiler
  # trace of 20 steps (phases-json-trace.json).
  stage phases-free "${GPU_CHECK_PHASES_S:-150}" python3 scripts/profile_engine_phases.py \
    --json "$OUT/phases-free.json" -- "$MODEL" --dtype bfloat16 --load-format dummy \
    --dataset sharegpt --num-prompts 1000 --seed 0 "${TOKENIZER_ARGS[@]}"
  stage phases-json "${GPU_CHECK_PHASES_S:-150}" python3 scripts/profile_engine_phases.py \
    --json "$OUT/phases-json.json" --trace "$OUT/phases-json-trace.json" -- "$MODEL" \
    --dtype bfloat16 --load-format dummy --dataset sharegpt --num-prompts 1000 --seed 0 \
    "${TOKENIZER_ARGS[@]}" --response-format benchmarks/structured/w2-json-schema.json
  # Host cost of filling the token masks, per step, at the benchmark's vocabulary.
  stage grammar-cost "${GPU_CHECK_GRAMMAR_S:-120}" python3 scripts/bench_grammar.py \
    "${TOKENIZER_ARGS[@]}" --vocab-size 128256 --batch 16 64 256 --threads 1 4 8 16
fi

if [ "${GPU_CHECK_KVQ:-0}" = 1 ]; then
  # K/V cache int8 (quant_policy 8) and int4 (4): W2 with the cache fixed at 7.8 GiB (the memory
  # of 64k bf16 tokens) for policies 0, 8 and 4, at batch GPU_CHECK_KVQ_BATCH (512: room for the
  # tokens int4 holds); W2 at the defaults and W1 with policy 8, against w2 and w1 above.
  # The engine logs its pool (tokens, blocks, GiB) at start-up: LMFORGE_LOG_LEVEL=INFO.
  for policy in 0 8 4; do
    LMFORGE_LOG_LEVEL=INFO stage "kvq-w2-7.8gib-p$policy" "${GPU_CHECK_KVQ_W2_S:-150}" \
      "${BENCH[@]}" throughput "$MODEL" --dtype bfloat16 --load-format dummy --dataset sharegpt \
      --num-prompts 1000 --seed 0 "${TOKENIZER_ARGS[@]}" --kv-cache-memory 7.8GiB \
      --quant-policy "$policy" --max-batch-size "${GPU_CHECK_KVQ_BATCH:-512}" \
      --json "$OUT/kvq-w2-7.8gib-p$policy.json"
  done
  # Policy 0 at the same batch with memory to spare: what a pool large enough to never preempt
  # reaches at that batch, so the most that any larger pool at 7.8 GiB can buy.
  stage kvq-w2-spare-p0 "${GPU_CHECK_KVQ_W2_S:-150}" "${BENCH[@]}" throughput "$MODEL" \
    --dtype bfloat16 --load-format dummy --dataset sharegpt --num-prompts 1000 --seed 0 \
    "${TOKENIZER_ARGS[@]}" --max-batch-size "${GPU_CHECK_KVQ_BATCH:-512}" \
    --json "$OUT/kvq-w2-spare-p0.json"
  LMFORGE_LOG_LEVEL=INFO stage kvq-w2-p8 "${GPU_CHECK_KVQ_W2_S:-150}" "${BENCH[@]}" throughput \
    "$MODEL" --dtype bfloat16 --load-format dummy --dataset sharegpt --num-prompts 1000 --seed 0 \
    "${TOKENIZER_ARGS[@]}" --quant-policy 8 --json "$OUT/kvq-w2-p8.json"
  stage kvq-w1-p8 "${GPU_CHECK_W1_S:-90}" "${BENCH[@]}" generation "$MODEL" --dtype bfloat16 \
    --load-format dummy --batch-size 1 --input-len 128 --output-len 512 --quant-policy 8 \
    --json "$OUT/kvq-w1-p8.json"
  # The decode kernel alone over bf16, int8 and int4 caches.
  stage kvq-decode-attention "${GPU_CHECK_KVQ_ATTN_S:-120}" python3 \
    scripts/bench_decode_attention.py --batch-size 1 64 256 512 --context 640 2048 --splits 1 16 \
    --quant-policy 0 8 4 --no-config-sweep
  # The prefill kernel alone: own tokens from the cache against from their unquantized K/V.
  stage kvq-prefill-attention "${GPU_CHECK_KVQ_PREFILL_S:-120}" python3 \
    scripts/bench_prefill_attention.py --prompt 256 300 1000 --prefix 0 256 2048 \
    --quant-policy 0 8 4
fi

if [ "${GPU_CHECK_W3:-0}" = 1 ]; then
  # W3: api_server at its defaults (batch 1,024 on an 80 GB GPU), then at each of
  # GPU_CHECK_W3_BATCHES ("256 512"; set but empty, the defaults alone), one server at a time.
  # At the defaults, the first request after start-up alone (no warm-up request), then 1000 at
  # once and 200 at 4 requests/s.
  # GPU_CHECK_W3_PEER names another server's URL (LMDeploy's, vLLM's) to load with the same
  # requests after lmforge's; GPU_CHECK_W3_PEER_CMD, a shell command that starts that server
  # (for example LMDeploy's `lmdeploy serve api_server MODEL --server-port 23334`), has this
  # script start it once lmforge's servers are down and stop it afterwards, so both servers get
  # the same GPU and client in one run.
  wait_ready() {  # wait_ready [URL]: until the server answers, or its process is gone
    until curl -sf "${1:-http://127.0.0.1:$PORT}/v1/models" >/dev/null; do
      kill -0 "$server" 2>/dev/null || return 1
      sleep 1
    done
  }
  export -f wait_ready
  export PORT
  SERVE=("${BENCH[@]}" serve --dataset sharegpt --seed 0 "${TOKENIZER_ARGS[@]}")
  for batch in default ${GPU_CHECK_W3_BATCHES-256 512}; do
    s=$([ "$batch" = default ] || printf -- '-b%s' "$batch")
    flags=()
    [ "$batch" = default ] || flags=(--max-batch-size "$batch")
    python3 -m lmforge.cli.main serve api_server "$MODEL" --dtype bfloat16 --load-format dummy \
      --server-name 127.0.0.1 --server-port "$PORT" "${flags[@]}" >"$OUT/w3$s-server.log" 2>&1 &
    server=$!
    export server
    stage "w3$s-server-start" "${GPU_CHECK_SERVER_START_S:-120}" bash -c wait_ready
    if [ "$batch" = default ]; then
      stage w3-first "${GPU_CHECK_W3_FIRST_S:-60}" "${SERVE[@]}" "http://127.0.0.1:$PORT" \
        --num-prompts 1 --warmup 0 --json "$OUT/w3-first.json"
    fi
    stage "w3$s" "${GPU_CHECK_W3_S:-150}" "${SERVE[@]}" "http://127.0.0.1:$PORT" \
      --num-prompts 1000 --json "$OUT/w3$s.json"
    if [ "$batch" = default ]; then
      stage w3-rate "${GPU_CHECK_W3_RATE_S:-90}" "${SERVE[@]}" "http://127.0.0.1:$PORT" \
        --num-prompts 200 --request-rate 4 --json "$OUT/w3-rate.json"
    fi
    kill -INT "$server" 2>/dev/null
    wait "$server" 2>/dev/null
  done
  if [ -n "${GPU_CHECK_W3_PEER:-}" ] && [ -n "${GPU_CHECK_W3_PEER_CMD:-}" ]; then
    setsid bash -c "$GPU_CHECK_W3_PEER_CMD" >"$OUT/w3-peer-server.log" 2>&1 &
    server=$!
    export server
    stage w3-peer-server-start "${GPU_CHECK_PEER_START_S:-240}" bash -c \
      "wait_ready $GPU_CHECK_W3_PEER"
  fi
  if [ -n "${GPU_CHECK_W3_PEER:-}" ]; then
    stage w3-peer "${GPU_CHECK_W3_S:-150}" "${SERVE[@]}" "$GPU_CHECK_W3_PEER" \
      --num-prompts 1000 --json "$OUT/w3-peer.json"
    stage w3-peer-rate "${GPU_CHECK_W3_RATE_S:-90}" "${SERVE[@]}" "$GPU_CHECK_W3_PEER" \
      --num-prompts 200 --request-rate 4 --json "$OUT/w3-peer-rate.json"
  fi
  if [ -n "${GPU_CHECK_W3_PEER_CMD:-}" ]; then  # the peer's whole process group
    kill -INT -- "-$server" 2>/dev/null
    sleep 5
    kill -KILL -- "-$server" 2>/dev/null
  fi
fi

echo
echo "=== stages"
printf '  %s\n' "${STATUS[@]}" | tee "$OUT/stages.txt"
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def load(name):
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None
print("\n=== results")
engines = [""] + sorted({p.stem.partition("-")[2] for p in out.glob("w[124]-*.json")})
for engine in engines:
    label = f" ({engine or 'pytorch'})"
    for name in ("w1", "w4"):
        report = load(name + (f"-{engine}" if engine else ""))
        if report:
            print(f"{name.upper()}{label} on {report['device']}:")
            for row in report["rows"]:
                print(f"  batch {row['batch_size']:>3}: {row['output_tok_s']:9.1f} output tok/s, "
                      f"first token {row['first_token_latency_s'] * 1000:7.1f} ms")
    report = load("w2" + (f"-{engine}" if engine else ""))
    if report:
        row = report["rows"][0]
        print(f"W2{label} on {report['device']}: {row['request_s']:.1f} req/s, "
              f"{row['output_tok_s']:.0f} output tok/s, {row['total_tok_s']:.0f} total tok/s, "
              f"{row['elapsed_s']:.1f} s")
report = load("prefill-ready")
if report:
    for engine, ms in report["prefill_ms"].items():
        print(f"{report['prefill_len']}-token prefill step ({engine}): {ms:.1f} ms")
    if "turbomind_ready" in report:
        print(f"turbomind engine ready from a converted folder: "
              f"{report['turbomind_ready']['ready_s']} s")
def w2_line(name):
    report = load(name)
    if not report:
        return None
    row = report["rows"][0]
    steps = (f", {row['steps']} steps, {row['preemptions']} preempted" if "steps" in row
             else "")
    return row["request_s"], (f"{row['request_s']:.1f} req/s, {row['output_tok_s']:.0f} output "
                              f"tok/s, {row['elapsed_s']:.1f} s{steps}")
def pool(name):
    log = out / f"{name}.log"
    lines = [l for l in log.read_text().splitlines() if "K/V cache:" in l] if log.is_file() else []
    return lines[-1].split("K/V cache: ", 1)[1].split(";")[0] if lines else "pool not logged"
base, constrained = w2_line("w2"), w2_line("w2-json")
if base and constrained:
    json_row, row = load("w2-json")["rows"][0], load("w2")["rows"][0]
    print(f"W2 with a JSON schema: {constrained[1]} ({json_row['output_tokens']} of "
          f"{row['output_tokens']} output tokens) = {constrained[0] / base[0]:.3f}x unconstrained "
          "(target >= 0.90x)")
fixed = {p: w2_line(f"kvq-w2-7.8gib-p{p}") for p in (0, 8, 4)}
if any(fixed.values()):
    print("KV cache quantization, W2 with --kv-cache-memory 7.8GiB (targets: int8 >= 1.4x, "
          "int4 >= 1.6x of policy 0):")
    for p, line in fixed.items():
        if line:
            ratio = f" = {line[0] / fixed[0][0]:.2f}x policy 0" if fixed[0] and p else ""
            print(f"  quant_policy {p}: {line[1]}{ratio}; {pool(f'kvq-w2-7.8gib-p{p}')}")
    spare = w2_line("kvq-w2-spare-p0")
    if spare:
        ceiling = f" = {spare[0] / fixed[0][0]:.2f}x policy 0 at 7.8 GiB" if fixed[0] else ""
        print(f"  policy 0, same batch, memory to spare (the most a larger pool can buy): "
              f"{spare[1]}{ceiling}")
    base, int8 = w2_line("w2"), w2_line("kvq-w2-p8")
    if base and int8:
        print(f"  W2 at the defaults, policy 8: {int8[1]} = {int8[0] / base[0]:.3f}x policy 0 "
              "(target >= 0.97x)")
    w1, w1q = load("w1"), load("kvq-w1-p8")
    if w1 and w1q:
        a, b = w1["rows"][0]["output_tok_s"], w1q["rows"][0]["output_tok_s"]
        print(f"  W1, policy 8: {b:.1f} tok/s = {b / a:.3f}x policy 0 (target >= 0.97x)")
for name in ("w3-first", "w3", "w3-b512", "w3-b1024", "w3-rate", "w3-peer", "w3-peer-rate"):
    report = load(name)
    if not report:
        continue
    row = report["rows"][0]
    print(f"{name.upper()}: {row['request_s']:.1f} req/s, TTFT p50/p99 {row['ttft_p50_s'] * 1000:.0f}/"
          f"{row['ttft_p99_s'] * 1000:.0f} ms, ITL p50/p99 {row['itl_p50_s'] * 1000:.1f}/"
          f"{row['itl_p99_s'] * 1000:.1f} ms, {row['failed']} failed")
PY
