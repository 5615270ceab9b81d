#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, the CPU tests, then the Triton kernels in Triton's
# interpreter (TRITON_INTERPRET must be set before Triton is imported, hence its own process).
# A pytest run that collects no test fails the script: silence is not a pass.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${VIRTUAL_ENV:-}" && -f .venv/bin/activate ]]; then
    # shellcheck disable=SC1091
    source .venv/bin/activate
fi

run_pytest() {
    local status=0
    python -m pytest "$@" || status=$?
    if [[ $status -eq 5 ]]; then
        echo "error: pytest $* collected no tests" >&2
        return 1
    fi
    return "$status"
}

echo "== ruff"
ruff check .
echo "== pytest (CPU)"
run_pytest -m "not gpu and not triton_interpret"
echo "== pytest (Triton interpreter)"
TRITON_INTERPRET=1 run_pytest -m triton_interpret plugins/torch_triton/tests
