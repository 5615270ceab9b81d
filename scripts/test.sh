#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, the CPU tests, then the Triton kernels in Triton's
# interpreter (TRITON_INTERPRET must be set before Triton is imported, hence its own process).
# Every stage runs, so one CI run reports every problem; the script fails if any stage failed.
# A pytest run that collects no test counts as failed: silence is not a pass.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${VIRTUAL_ENV:-}" && -f .venv/bin/activate ]]; then
    # shellcheck disable=SC1091
    source .venv/bin/activate
fi

failed=()

stage() {
    local name=$1 status=0
    shift
    echo "== $name"
    "$@" || status=$?
    if [[ $status -eq 5 ]]; then
        echo "error: $name collected no tests" >&2
    fi
    if [[ $status -ne 0 ]]; then
        failed+=("$name (exit $status)")
    fi
}

stage "ruff" ruff check .
stage "pytest (CPU)" python -m pytest -m "not gpu and not triton_interpret"
stage "pytest (Triton interpreter)" \
    env TRITON_INTERPRET=1 python -m pytest -m triton_interpret plugins/torch_triton/tests \
    tests/structured/test_triton_bitmask.py

if (( ${#failed[@]} )); then
    printf 'FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "all stages passed"
